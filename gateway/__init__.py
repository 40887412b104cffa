"""One GraphQL API over the Almanac and Autoposting billing APIs."""

__version__ = "0.1.0"
