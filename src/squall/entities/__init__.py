"""OpenWhisk's entity model: names, limits, actions and activation records."""
