// The embeddable chat widget (being written).
