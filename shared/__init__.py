"""Code every Uptake service uses."""
