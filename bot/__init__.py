"""The running kneecoach service: settings, CLI, channel adapters, scheduler and delivery."""
