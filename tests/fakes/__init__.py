"""Local stand-ins for remote services the tests cannot reach (exchanges)."""
