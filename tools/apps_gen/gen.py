import sys, harness, intro, inter, comp, train
out = sys.argv[1]
harness.write(intro.SPECS + inter.SPECS + comp.SPECS, out + "/embedded.jsonl")
harness.write(train.SPECS, out + "/train.jsonl")
