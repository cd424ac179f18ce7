"""The long-running parts of flowctl: hub, scheduler, gateway and node agent, on Trio."""
