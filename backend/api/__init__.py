"""ccbridge's HTTP API: the control interface served (`server`), spoken by a client (`client`), on the wire (`wire`)."""
