"""The panel's screens; each redraws from `app.state` in `refresh_view`."""
