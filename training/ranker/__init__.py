"""The cloud ranker: DIN training on logs, held-out evaluation, weights and bundle export."""
