"""The CS team's web console: server-rendered pages over the four services' REST APIs."""
