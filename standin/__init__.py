"""A local stand-in for one payment processor, faithful to CONTRACT.md §2."""
