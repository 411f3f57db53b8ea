"""Following reported sites: a crawl per report or seed list as durable jobs (docs/crawl.md).

Every media file found goes through the same analysis as an upload; matched pages feed the
removal loop (locations, evidence)."""
