"""Platform-neutral conversation logic: messages, the engine, the flows and the exercise program."""
