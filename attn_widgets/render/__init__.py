"""Pictures of the panels without a browser (SVG and PNG), in the panels' style."""
