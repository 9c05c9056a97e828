"""Fraud model servers: one aiohttp process per kind (xgboost, pytorch: ONNX Runtime models from
the registry, champion and challenger slots; heuristic: rules, no ML imports).

Run with `python -m model_servers --kind <kind>`; build in-process with
`model_servers.app.create_app(kind, settings)`. See README.md in this folder.
"""
