"""The analyst review desk's core: taxonomy, queue and claims, grading and consensus, exposure
limits, viewing preferences and dashboard statistics. The web pages (tipline.service.desk)
and the API are thin layers over these functions."""
