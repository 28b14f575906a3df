"""ccbridge's control panel (Textual). Reaches the backend only through `tui.bridge`."""
