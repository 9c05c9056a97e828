"""Console panes and small widgets; each pane draws a `MeshState`."""
