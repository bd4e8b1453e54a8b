"""One Textual Screen per pane."""
