"""Keys, CSRs, certificate templates, issuing, chain verification, bundles, rotation timing."""
