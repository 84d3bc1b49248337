#!/bin/sh
# Mixed workload: generate a source tree, archive and compress it, search it,
# build a small C program and run it. Deterministic; ~5-10 s on 2 cores.
set -eu
W="$1"; SCALE="${2:-1}"
cd "$W"
rm -rf tree out; mkdir -p tree out
d=0
while [ "$d" -lt $((20 * SCALE)) ]; do
  mkdir -p "tree/d$d"
  f=0
  while [ "$f" -lt 25 ]; do
    seq 1 $(( (d + 1) * (f + 1) * 4 )) > "tree/d$d/f$f.txt"
    f=$((f + 1))
  done
  d=$((d + 1))
done
tar -cf out/tree.tar tree
gzip -6 -c out/tree.tar > out/tree.tar.gz
mkdir -p out/x && tar -xzf out/tree.tar.gz -C out/x
find out/x -name '*.txt' -type f | sort | xargs sha256sum > out/sums
find tree -type f -name 'f1*.txt' -exec wc -l {} + > out/counts
i=0
while [ "$i" -lt $((100 * SCALE)) ]; do
  grep -c 7 "tree/d$((i % (20 * SCALE)))/f$((i % 25)).txt" > /dev/null || true
  i=$((i + 1))
done
cat > out/prog.c <<'C'
#include <stdio.h>
int main(void) { unsigned long s = 0; for (unsigned long i = 0; i < 1000000; i++) s += i % 7; printf("%lu\n", s); return 0; }
C
j=0
while [ "$j" -lt $((3 * SCALE)) ]; do
  cc -O2 -o out/pkb-prog out/prog.c
  out/pkb-prog > /dev/null
  j=$((j + 1))
done
rm -rf tree out
