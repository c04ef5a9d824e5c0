"""The health service: daily rollups, trend-based health scores, alert rules and alerts."""
