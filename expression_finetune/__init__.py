"""Stage package (filled by its issue)."""
