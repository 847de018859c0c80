"""The controller: the OpenWhisk REST API, authentication, invoke and blocking waits."""
