"""A local stand-in for one payment processor, faithful to docs/contract.md §2."""
