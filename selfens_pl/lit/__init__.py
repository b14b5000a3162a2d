"""The Lightning layer: the LightningModule, fine-tuning losses, the prediction writer callback, the pre-flight
checks and the LightningCLI. Imports every layer below it (never ``commands``)."""
