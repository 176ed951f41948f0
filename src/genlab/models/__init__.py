"""One LightningModule per generative family, all on the GenerativeModule contract."""
