"""Networks, nonlinearities, remedies and the LightningModule that trains them."""
