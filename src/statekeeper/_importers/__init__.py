"""What ``statekeeper import`` reads and how it writes."""
