"""Safe network access: fetching a URL under the SSRF policy (every hop resolved, every
address checked, connections pinned to the checked address), with size and time limits."""
