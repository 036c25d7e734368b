"""HTTP routers of the embedded server, one module per protocol (openai, tgi) plus ops."""
