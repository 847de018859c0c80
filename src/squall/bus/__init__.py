"""Message bus backends."""
