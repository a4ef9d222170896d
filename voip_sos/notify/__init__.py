"""Telling people: emergency SMS texts and their transport, voice and family links."""
