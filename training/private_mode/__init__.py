"""Private Recommend: an on-device interest encoder distilled from the cloud ranker, evaluated."""
