DROP TABLE caterers;
