"""Notify: email and Slack delivery, templates, suppressions, tracking."""
