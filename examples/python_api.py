# Tessera from a plain Python script: sample two crystals, judge them, find them in the store.
# No `if __name__ == "__main__":` guard is needed: evaluate_structures relaxes in this process by default.
import tessera

crystals = tessera.sample(n=2, elements=["Li", "Co", "O"], atoms=4, seed=0, steps=50)  # shipped model, offline
store = tessera.Store("example-store")  # a folder here; tessera.Store() opens $TESSERA_STORE or the default
judged = tessera.evaluate_structures(crystals, max_relaxations=1, store=store)  # CHGNet, reference hull
for c in judged.candidates:  # tessera.Candidate: every stage's result; c.structure() is the relaxed cell
    print(c.id, c.formula, "relaxed" if c.relaxed else "not relaxed", c.e_hull, c.stable, c.error or "")
for hit in store.search(run_id=judged.run_id):  # tessera.StoredCandidate rows, most stable first
    print(hit.id, hit.formula, hit.spacegroup, hit.e_hull, hit.checkpoint_hash[:12], hit.seed)
