"""Drawing one exercise's frames: the caption, the figure at one scale, the small second
view where a side view cannot show what matters, the phase underneath."""

from __future__ import annotations

import math
import textwrap

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, FancyArrow, Polygon, Rectangle
from PIL import Image

from conversations.demo.figure import (
    ARM_R,
    BACKGROUND,
    BALL_R,
    COLOURS,
    HEAD_R,
    LIMB_R,
    ROLLER_R,
    TRUNK_R,
    Body,
    Frame,
    place,
)
from conversations.i18n import _
from conversations.program.data import Dose, Exercise

WIDTH_PX = 480
FIGURE_MAX_PX = 330  # the figure's height at most; a lying figure is scaled by its width
DETAIL_PX = 150  # the small second view, square
LABEL_PX = 40  # the band under the floor where the phase is written
DPI = 100


# --- drawing ----------------------------------------------------------------------------------
class Canvas:
    """One exercise's picture: the static part drawn once, the moving artists per frame.

    Laid out in pixels: the caption on top, the small second view (if any) at the top right,
    the figure below or beside it at one fixed scale for every frame, the phase underneath."""

    def __init__(self, exercise: Exercise, dose: Dose | None, loop: list[Frame],
                 notes: dict[str, dict[str, str]] | None = None) -> None:
        demo = self.demo = exercise.demo
        placed = [place(demo, f.pose) for f in loop]
        xs = [p[0] for b, props in placed for p in (*b.points.values(), *props.values())]
        ys = [p[1] for b, props in placed for p in (*b.points.values(), *props.values())]
        if "wall" in demo.props:
            xs.append(min(b.points["pelvis"][0] for b, _ in placed) - TRUNK_R - 0.08)
        if "chair" in demo.props:
            xs.append(placed[0][0].points["pelvis"][0] - TRUNK_R - 0.06)
        pad = 0.12
        left, right = min(xs) - pad, max(xs) + pad
        bottom = -0.02 if demo.view != "above" else min(ys) - 0.2
        top = max(ys) + pad
        scale = min(WIDTH_PX / (right - left), FIGURE_MAX_PX / (top - bottom))
        # In the current language, as the session's text names the exercise and its dose.
        self.title = textwrap.wrap(exercise.words.name, 36)
        self.dose_lines = textwrap.wrap(dose.describe(notes), 44) if dose is not None else []
        self.labels: list[str] = []  # every other word drawn, for tests
        caption_px = 14 + 24 * len(self.title) + 21 * len(self.dose_lines) + 6
        figure_w, figure_h = (right - left) * scale, (top - bottom) * scale
        inset = DETAIL_PX if demo.details else 0
        # Beside the second view when there is room; else below it.
        beside = inset == 0 or figure_w + inset + 24 <= WIDTH_PX
        figure_top = caption_px + (0 if beside else inset + 8)
        height = max(figure_top + figure_h + LABEL_PX, caption_px + inset + 12 + LABEL_PX)
        height = int(min(max(height, 280), 720))
        centre = ((WIDTH_PX - inset - 12) / 2 if beside and inset else WIDTH_PX / 2)
        self.scale = scale
        self.width, self.height = WIDTH_PX, height
        self.fig = Figure(figsize=(WIDTH_PX / DPI, height / DPI), dpi=DPI,
                          facecolor=BACKGROUND)
        self.canvas = FigureCanvasAgg(self.fig)
        self.ax = self.fig.add_axes((0, 0, 1, 1))
        # World coordinates with the same scale both ways; the floor is y = 0.
        self.x0 = (left + right) / 2 - centre / scale
        self.x1 = self.x0 + WIDTH_PX / scale
        self.y0 = bottom - LABEL_PX / scale
        self.y1 = self.y0 + height / scale
        self.ax.set_xlim(self.x0, self.x1)
        self.ax.set_ylim(self.y0, self.y1)
        self.ax.set_axis_off()
        self.px_per_unit = scale
        self.inset_box = ((WIDTH_PX - inset - 8) / WIDTH_PX, 1 - (caption_px + inset) / height,
                          inset / WIDTH_PX, inset / height)
        self.pelvis_top = max(b.points["pelvis"][1] for b, _ in placed)
        self._static(placed, caption_px)
        self.limbs: dict[str, Line2D] = {}
        self.head = Circle((0, 0), HEAD_R, color=COLOURS["body"], zorder=5, animated=True)
        self.ax.add_patch(self.head)
        self.ball = Circle((0, 0), BALL_R, color=COLOURS["ball"], zorder=3.5, animated=True)
        if "ball" in demo.props:
            self.ax.add_patch(self.ball)
        self.label = self.fig.text(0.5, 8 / height, "", ha="center", va="bottom", fontsize=17,
                                   color=COLOURS["text"], weight="bold", animated=True)
        self.detail = self._detail_axes()
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(self.fig.bbox)

    # the parts that never move
    def _static(self, placed: list[tuple[Body, dict[str, np.ndarray]]], caption_px: float
                ) -> None:
        ax, demo, fig, h = self.ax, self.demo, self.fig, self.height
        y = 10
        for line in self.title:
            fig.text(0.5, 1 - y / h, line, ha="center", va="top", fontsize=15, weight="bold",
                     color=COLOURS["text"])
            y += 24
        for line in self.dose_lines:
            fig.text(0.5, 1 - y / h, line, ha="center", va="top", fontsize=13, weight="bold",
                     color=COLOURS["dose"])
            y += 21
        view = {"side": _("side view"), "front": _("seen from the front"),
                "above": _("seen from above")}[demo.view]
        self.labels.append(view)
        fig.text(0.012, 0.008, view, fontsize=9, color="#666666")
        if "floor" in demo.props:
            if demo.view == "above":  # an exercise mat under the figure
                lows = [p[1] for b, _ in placed for p in b.points.values()]
                highs = [p[1] for b, _ in placed for p in b.points.values()]
                ax.add_patch(Rectangle((self.x0 + 0.04, min(lows) - 0.12),
                                       self.x1 - self.x0 - 0.08,
                                       max(highs) - min(lows) + 0.24, color=COLOURS["mat"],
                                       zorder=0))
            else:
                ax.add_patch(Rectangle((self.x0, self.y0), self.x1 - self.x0, -self.y0,
                                       color="#eeeeee", zorder=0))
                ax.plot([self.x0, self.x1], [0, 0], color=COLOURS["floor"], lw=4, zorder=1,
                        solid_capstyle="butt")
        if "wall" in demo.props:
            left = min(b.points["pelvis"][0] for b, _ in placed) - TRUNK_R
            tall = max(b.points["head"][1] for b, _ in placed) + 0.12
            ax.add_patch(Rectangle((left - 0.08, 0), 0.08, tall, color=COLOURS["wall"],
                                   zorder=1))
        if "chair" in demo.props:
            b = placed[0][0]
            seat = b.points["pelvis"][1] - TRUNK_R
            back = b.points["pelvis"][0] - TRUNK_R - 0.05
            c = COLOURS["chair"]
            ax.add_patch(Rectangle((back, seat - 0.035), 0.25, 0.035, color=c, zorder=2))
            ax.add_patch(Rectangle((back, seat - 0.035), 0.035, 0.40, color=c, zorder=1))
            for leg_x in (back, back + 0.215):
                ax.add_patch(Rectangle((leg_x, 0), 0.035, seat - 0.035, color=c, zorder=1))
        if "foam_roller" in demo.props:
            centre = placed[0][1]["foam_roller"]
            ax.add_patch(Circle((centre[0], ROLLER_R), ROLLER_R, color=COLOURS["foam_roller"],
                                zorder=2))
            ax.add_patch(Circle((centre[0], ROLLER_R), ROLLER_R * 0.35, color="#7fd1c3",
                                zorder=2.1))

    def _line(self, key: str, colour: str, radius: float, z: float) -> Line2D:
        line = self.limbs.get(key)
        if line is None:
            width_pt = 2 * radius * self.px_per_unit * 72 / DPI
            line = Line2D([], [], color=colour, lw=width_pt, solid_capstyle="round",
                          solid_joinstyle="round", zorder=z, animated=True)
            self.ax.add_line(line)
            self.limbs[key] = line
        return line

    # the moving parts
    def draw(self, frame: Frame) -> Image.Image:
        b, props = place(self.demo, frame.pose)
        p = b.points
        self.canvas.restore_region(self.background)
        chain = [("o", COLOURS["other"], 2.5), ("trunk", COLOURS["body"], 4),
                 ("w", COLOURS["working"], 4.5), ("arm", COLOURS["body"], 6)]
        artists: list = []
        for key, colour, z in chain:
            if key in ("o", "w"):
                pts = [p["pelvis"], p[f"{key}_knee"], p[f"{key}_ankle"]]
                foot = [p[f"{key}_heel"], p[f"{key}_toe"]]
                leg = self._line(key, colour, LIMB_R, z)
                leg.set_data([q[0] for q in pts], [q[1] for q in pts])
                sole = self._line(key + "_foot", colour, LIMB_R * 0.8, z)
                sole.set_data([q[0] for q in foot], [q[1] for q in foot])
                artists += [leg, sole]
                if key == "o" and "ball" in self.demo.props:
                    self.ball.center = tuple(props["ball"])
                    artists.append(self.ball)
            elif key == "trunk":
                trunk = self._line("trunk", colour, TRUNK_R, z)
                trunk.set_data([p["pelvis"][0], p["shoulder"][0]],
                               [p["pelvis"][1], p["shoulder"][1]])
                neck = self._line("neck", colour, LIMB_R * 0.7, z)
                neck.set_data([p["shoulder"][0], p["head"][0]], [p["shoulder"][1], p["head"][1]])
                self.head.center = tuple(p["head"])
                artists += [neck, trunk, self.head]
            else:
                arm = self._line("arm", colour, ARM_R, z)
                arm.set_data([p["shoulder"][0], p["elbow"][0], p["hand"][0]],
                             [p["shoulder"][1], p["elbow"][1], p["hand"][1]])
                artists.append(arm)
        self.label.set_text(frame.label)
        artists.append(self.label)
        for artist in sorted(artists, key=lambda a: a.get_zorder()):
            self.ax.draw_artist(artist)
        if self.detail is not None:
            self._draw_detail(frame, b)
        self.canvas.blit(self.fig.bbox)
        rgba = np.asarray(self.canvas.buffer_rgba())
        return Image.fromarray(rgba[:, :, :3].copy())

    def pixel(self, point: np.ndarray) -> tuple[int, int]:
        """Where a point of the picture lands in the image (x right, y down)."""
        x, y = self.ax.transData.transform(point)
        return round(x), round(self.height - y)

    # the small second view
    def _detail_axes(self) -> Axes | None:
        kinds = set(self.demo.details)
        if not kinds:
            return None
        ax = self.fig.add_axes(self.inset_box)
        ax.set_xlim(-1, 1)
        ax.set_ylim(-1, 1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_facecolor(COLOURS["detail_bg"])
        for spine in ax.spines.values():
            spine.set_color("#999999")
        if kinds & {"knees_over_toes", "ball_squeeze"}:
            self.detail_kind = "front"
            title = _("from the front")
        elif "knee_opens" in kinds:
            self.detail_kind = "clam"
            title = _("from the feet")
            ax.plot([-0.9, 0.9], [-0.6, -0.6], color=COLOURS["floor"], lw=3)
            together = _("feet together")
            self.labels.append(together)
            ax.text(0.55, -0.85, together, ha="center", fontsize=9, color="#444444")
        else:
            self.detail_kind = "foot"
            title = _("foot from above")
        self.labels.append(title)
        ax.set_title(title, fontsize=10, color="#444444", pad=3)
        self.detail_artists: list = []
        return ax

    def _draw_detail(self, frame: Frame, b: Body) -> None:
        ax = self.detail
        assert ax is not None
        for artist in self.detail_artists:
            artist.remove()
        self.detail_artists = []
        add = self.detail_artists.append
        kinds = set(self.demo.details)
        pose = frame.pose
        width = 2 * LIMB_R * 2.2 * self.px_per_unit * 72 / DPI * 0.5

        def thick(xs: list[float], ys: list[float], colour: str, w: float = width,
                  z: float = 3) -> None:
            line = Line2D(xs, ys, color=colour, lw=w, solid_capstyle="round", zorder=z)
            ax.add_line(line)
            add(line)

        if self.detail_kind == "front":
            # Heights from the side view, so the front view bends with the figure.
            p = b.points
            scale = 1.6 / (self.pelvis_top + 0.05)

            def y(v: float) -> float:
                return -0.85 + v * scale

            squeeze = frame.effort if "ball_squeeze" in kinds else 0.0
            for side, key, colour in ((-1, "o", COLOURS["other"]), (1, "w", COLOURS["working"])):
                leg = pose.other if key == "o" else pose.working
                turn = math.radians(leg.turn_out if "foot_out" in kinds else 0)
                hip_x, foot_x = side * 0.32, side * 0.40
                tx, ty = foot_x + side * 0.3 * math.sin(turn), y(0.0) - 0.08
                # The knee tracks over the toes (the middle of the foot), or in to the ball.
                knee_x = (foot_x + tx) / 2 - side * 0.12 * squeeze
                thick([hip_x, knee_x, foot_x], [y(p["pelvis"][1]), y(p[f"{key}_knee"][1]),
                                                y(p[f"{key}_ankle"][1])], colour)
                thick([foot_x, tx], [y(p[f"{key}_ankle"][1]), ty], colour, width * 0.8)
                if "knees_over_toes" in kinds:
                    guide = Line2D([(foot_x + tx) / 2] * 2, [y(p[f"{key}_knee"][1]), ty],
                                   color=COLOURS["guide"], lw=2, ls="--", zorder=4)
                    ax.add_line(guide)
                    add(guide)
            if "ball_squeeze" in kinds:
                knee_y = y((p["w_knee"][1] + p["o_knee"][1]) / 2)
                gap = 2 * (0.40 - 0.12 * squeeze) - 0.22
                ball = Polygon(_ellipse(0, knee_y, gap / 2, 0.2 + 0.06 * squeeze),
                               color=COLOURS["ball"], zorder=5)
                ax.add_patch(ball)
                add(ball)
                for side in (-1, 1):
                    arrow = FancyArrow(side * 0.95, knee_y, -side * 0.28 * (0.4 + squeeze), 0,
                                       width=0.05, head_width=0.16, head_length=0.1,
                                       color=COLOURS["guide"], zorder=6)
                    ax.add_patch(arrow)
                    add(arrow)
        elif self.detail_kind == "clam":
            opening = math.radians(pose.working.turn_out)
            pivot = (0.55, -0.45)
            thick([pivot[0], -0.6], [pivot[1], pivot[1]], COLOURS["other"])
            end = (pivot[0] - 1.15 * math.cos(opening), pivot[1] + 1.15 * math.sin(opening))
            thick([pivot[0], end[0]], [pivot[1], end[1]], COLOURS["working"], z=4)
            dot = Circle(pivot, 0.09, color=COLOURS["body"], zorder=5)
            ax.add_patch(dot)
            add(dot)
        else:  # the foot seen from above: heel low in the box, toes forward (up)
            turn = pose.working.turn_out
            heel = (-0.05, -0.55)
            guide = Line2D([heel[0], heel[0]], [heel[1], 0.75], color="#999999", lw=2,
                           ls="--", zorder=2)
            ax.add_line(guide)
            add(guide)
            foot = Polygon(_foot(heel, turn), color=COLOURS["working"], zorder=3)
            ax.add_patch(foot)
            add(foot)
            if turn >= 1:
                angles = np.radians(np.linspace(0, turn, 12))
                arc = Line2D(heel[0] + 0.75 * np.sin(angles), heel[1] + 0.75 * np.cos(angles),
                             color=COLOURS["guide"], lw=3, zorder=4)
                ax.add_line(arc)
                add(arc)
            words = (_("toes out {degrees}°", degrees=round(turn)) if turn >= 1
                     else _("straight"))
            if words not in self.labels:
                self.labels.append(words)
            note = ax.text(0, -0.93, words, ha="center", fontsize=11, color=COLOURS["text"],
                           weight="bold")
            add(note)
        for artist in sorted(self.detail_artists, key=lambda a: a.get_zorder()):
            artist.set_animated(True)  # not part of the saved background
            ax.draw_artist(artist)


# A right foot's outline seen from above, heel at (0, 0), toes along +y; in box units.
_FOOT = [(-0.13, 0.0), (-0.16, 0.35), (-0.2, 0.72), (-0.14, 0.95), (0.0, 1.02), (0.14, 0.98),
         (0.21, 0.82), (0.2, 0.5), (0.14, 0.12), (0.1, -0.04), (0.0, -0.08), (-0.1, -0.05)]


def _foot(heel: tuple[float, float], turn: float) -> list[tuple[float, float]]:
    c, s = math.cos(math.radians(turn)), math.sin(math.radians(turn))
    return [(heel[0] + 1.1 * (x * c + y * s), heel[1] + 1.1 * (-x * s + y * c)) for x, y in _FOOT]


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> list[tuple[float, float]]:
    return [(cx + rx * math.cos(t), cy + ry * math.sin(t))
            for t in np.linspace(0, 2 * math.pi, 32)]


