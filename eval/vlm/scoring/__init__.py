"""Each benchmark's official metric and file-row mapping as pure functions (no file I/O, no other eval import)."""
