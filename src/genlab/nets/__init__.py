"""Plain nn.Modules that the model families are built from."""
