"""The Textual cockpit (arrives with the TUI issue); the engine never imports it."""
