class EngineError(RuntimeError):
    """The embedded engine could not be built, found or started: one clear line for the user."""
