"""Pure planners: spec + observed objects → desired objects, status and events."""
