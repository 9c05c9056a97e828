"""The Textual operator console (`meshctl console`): it talks to the operator API and NATS only."""
