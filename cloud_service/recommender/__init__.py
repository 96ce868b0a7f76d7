"""The cloud recommender: retrieval, the DIN ranker with ESMM heads, training and export."""
