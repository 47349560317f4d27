"""cosmos-posttrain: post-train Cosmos-Transfer2.5 on your own videos."""
