"""getUpdates' own request drops the updates the channel has in hand from the answer before
python-telegram-bot parses them, without confirming anything to the server."""

from __future__ import annotations

from telegram import Bot

from bot.channels.telegram_http import UpdatesRequest
from bot.channels.telegram_send import bot_request
from telegram_server import TOKEN, BotApiServer


def _bot(server: BotApiServer, fetched: int) -> Bot:
    return Bot(TOKEN, base_url=f"{server.root}/bot", request=bot_request(5.0),
               get_updates_request=UpdatesRequest(lambda: fetched, 5.0))


async def test_updates_in_hand_are_dropped_and_stay_unconfirmed(
        telegram_api: BotApiServer) -> None:
    ids = [(await telegram_api.send_text(2001 + n, "No"))["update_id"] for n in range(3)]
    async with _bot(telegram_api, ids[1]) as bot:
        assert [u.update_id for u in await bot.get_updates(offset=ids[0], timeout=0)] == ids[2:]
    # Dropped here, not confirmed: from the same offset the server hands all three out again.
    async with _bot(telegram_api, 0) as bot:
        assert [u.update_id for u in await bot.get_updates(offset=ids[0], timeout=0)] == ids


async def test_an_answer_of_updates_all_in_hand_is_empty(telegram_api: BotApiServer) -> None:
    ids = [(await telegram_api.send_text(2101, text))["update_id"] for text in ("a", "🦵" * 50)]
    async with _bot(telegram_api, ids[-1]) as bot:
        assert await bot.get_updates(offset=ids[0], timeout=0) == ()
