import random
R = random.Random(33)
def ints(n, lo, hi): return [R.randint(lo, hi) for _ in range(n)]
def word(n, alpha="abcdefghijklmnopqrstuvwxyz"): return "".join(R.choice(alpha) for _ in range(n))
def arr_in(a): return f"{len(a)}\n{' '.join(map(str, a))}\n"

SPECS = []

SPECS.append(dict(id="emb-025", difficulty="competition",
question="""A referee lists the finishing order of n runners by bib numbers. A pair of runners is an upset when the runner listed earlier has a larger bib number than the runner listed later. Count the upsets.

-----Input-----
The first line contains n (1 <= n <= 2*10^5). The second line contains n integers b_i (1 <= b_i <= 10^9; bib numbers may repeat, and equal numbers are not an upset).

-----Output-----
Print the number of pairs i < j with b_i > b_j.

{EXAMPLES}""",
solution="""import sys
def main():
    data = sys.stdin.buffer.read().split()
    n = int(data[0])
    b = list(map(int, data[1:1 + n]))
    ranks = {v: i + 1 for i, v in enumerate(sorted(set(b)))}
    size = len(ranks)
    tree = [0] * (size + 1)
    upsets = 0
    for seen, v in enumerate(b):
        r = ranks[v]
        # count earlier values <= v, the rest of the earlier ones are larger
        i, le = r, 0
        while i > 0:
            le += tree[i]
            i -= i & -i
        upsets += seen - le
        i = r
        while i <= size:
            tree[i] += 1
            i += i & -i
    print(upsets)
main()
""",
brute="""n = int(input())
b = list(map(int, input().split()))
print(sum(1 for i in range(n) for j in range(i + 1, n) if b[i] > b[j]))
""",
tests=[arr_in([3, 1, 2]), arr_in([1]), arr_in([5, 4, 3, 2, 1]), arr_in([2, 2, 2]), arr_in([1, 2, 3, 4])]
 + [arr_in(ints(R.randint(1, 80), 1, R.choice([3, 10**9]))) for _ in range(4)]))

def knap():
    n = R.randint(1, 10); W = R.randint(0, 50)
    items = [(R.randint(1, 20), R.randint(0, 100)) for _ in range(n)]
    return "%d %d\n%s\n" % (n, W, "\n".join(f"{w} {v}" for w, v in items))

SPECS.append(dict(id="emb-026", difficulty="competition",
question="""An expedition can carry at most W kilograms. There are n pieces of equipment; piece i weighs w_i kilograms and has usefulness v_i. Each piece is taken whole or left behind. Find the largest total usefulness of a selection whose total weight does not exceed W.

-----Input-----
The first line contains n and W (1 <= n <= 100, 0 <= W <= 10^5). Each of the next n lines contains w_i and v_i (1 <= w_i <= 10^5, 0 <= v_i <= 10^9).

-----Output-----
Print the maximum total usefulness.

{EXAMPLES}""",
solution="""import sys
data = sys.stdin.read().split()
n, W = int(data[0]), int(data[1])
best = [0] * (W + 1)
for i in range(n):
    w, v = int(data[2 + 2 * i]), int(data[3 + 2 * i])
    for cap in range(W, w - 1, -1):
        if best[cap - w] + v > best[cap]:
            best[cap] = best[cap - w] + v
print(best[W])
""",
brute="""import sys
data = sys.stdin.read().split()
n, W = int(data[0]), int(data[1])
items = [(int(data[2 + 2 * i]), int(data[3 + 2 * i])) for i in range(n)]
best = 0
for mask in range(1 << n):
    w = sum(items[i][0] for i in range(n) if mask >> i & 1)
    if w <= W:
        best = max(best, sum(items[i][1] for i in range(n) if mask >> i & 1))
print(best)
""",
tests=["3 5\n2 3\n3 4\n4 5\n", "1 0\n1 10\n", "2 10\n5 10\n5 10\n", "3 4\n5 100\n4 1\n1 2\n", "4 7\n1 1\n3 4\n4 5\n5 7\n"] + [knap() for _ in range(4)]))

SPECS.append(dict(id="emb-027", difficulty="competition", fn_name="subarraysWithSum", params=["nums", "k"],
starter="class Solution:\n    def subarraysWithSum(self, nums, k):\n",
question="""Given a list of integers nums (which may be negative) and an integer k, return the number of non-empty contiguous subarrays whose elements sum to k.

Constraints: 1 <= len(nums) <= 2*10^5, |nums[i]| <= 1000, |k| <= 10^9.

{EXAMPLES}""",
solution="""from collections import Counter
class Solution:
    def subarraysWithSum(self, nums, k):
        seen = Counter({0: 1})
        total = count = 0
        for x in nums:
            total += x
            count += seen[total - k]
            seen[total] += 1
        return count
""",
brute="""class Solution:
    def subarraysWithSum(self, nums, k):
        n = len(nums)
        return sum(1 for i in range(n) for j in range(i, n) if sum(nums[i:j + 1]) == k)
""",
tests=[[[1, 1, 1], 2], [[1, -1, 0], 0], [[5], 5], [[5], 4], [[0, 0, 0], 0]] + [[ints(R.randint(1, 40), -3, 3), R.randint(-4, 4)] for _ in range(4)]))

def graph(weighted=True, connect=False):
    n = R.randint(1, 8); m = R.randint(0, 14)
    edges = []
    if connect:
        for v in range(2, n + 1):
            edges.append((R.randint(1, v - 1), v, R.randint(1, 20)))
    for _ in range(m):
        edges.append((R.randint(1, n), R.randint(1, n), R.randint(1, 20)))
    R.shuffle(edges)
    return "%d %d\n%s" % (n, len(edges), "".join(f"{a} {b} {w}\n" for a, b, w in edges)) if edges else "%d 0\n" % n

SPECS.append(dict(id="emb-028", difficulty="competition",
question="""A city has n intersections numbered 1 to n and m two-way streets; street i joins intersections a_i and b_i and takes c_i minutes to drive. Streets may join an intersection with itself and several streets may join the same pair. For every intersection, find the shortest driving time from intersection 1, or -1 if it cannot be reached.

-----Input-----
The first line contains n and m (1 <= n <= 10^5, 0 <= m <= 2*10^5). Each of the next m lines contains a_i, b_i, c_i (1 <= a_i, b_i <= n, 1 <= c_i <= 10^9).

-----Output-----
Print n integers separated by spaces: the shortest time to each intersection 1..n.

{EXAMPLES}""",
solution="""import sys, heapq
data = sys.stdin.buffer.read().split()
n, m = int(data[0]), int(data[1])
adj = [[] for _ in range(n + 1)]
for i in range(m):
    a, b, c = int(data[2 + 3 * i]), int(data[3 + 3 * i]), int(data[4 + 3 * i])
    adj[a].append((b, c))
    adj[b].append((a, c))
dist = [-1] * (n + 1)
heap = [(0, 1)]
while heap:
    d, v = heapq.heappop(heap)
    if dist[v] != -1:
        continue
    dist[v] = d
    for u, c in adj[v]:
        if dist[u] == -1:
            heapq.heappush(heap, (d + c, u))
print(' '.join(map(str, dist[1:])))
""",
brute="""import sys
data = sys.stdin.read().split()
n, m = int(data[0]), int(data[1])
edges = [(int(data[2 + 3 * i]), int(data[3 + 3 * i]), int(data[4 + 3 * i])) for i in range(m)]
INF = float('inf')
d = [INF] * (n + 1)
d[1] = 0
for _ in range(n):
    for a, b, c in edges:
        if d[a] + c < d[b]:
            d[b] = d[a] + c
        if d[b] + c < d[a]:
            d[a] = d[b] + c
print(' '.join(str(x) if x < INF else '-1' for x in d[1:]))
""",
tests=["4 4\n1 2 5\n2 3 1\n1 3 9\n3 3 2\n", "1 0\n", "3 1\n2 3 4\n", "2 2\n1 2 7\n2 1 3\n", "5 4\n1 2 1\n2 3 1\n3 4 1\n1 4 10\n"] + [graph() for _ in range(4)]))

SPECS.append(dict(id="emb-029", difficulty="competition", fn_name="edit_distance", params=["a", "b"], wrap=True,
starter="def edit_distance(a, b):\n",
question="""The edit distance between two strings is the least number of single-character insertions, deletions and replacements that turn a into b. Write edit_distance(a, b) returning it.

Constraints: 0 <= len(a), len(b) <= 2000.

{EXAMPLES}""",
solution="""def edit_distance(a, b):
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
        prev = cur
    return prev[len(b)]
""",
brute="""from functools import lru_cache
def edit_distance(a, b):
    @lru_cache(maxsize=None)
    def go(x, y):
        if not x:
            return len(y)
        if not y:
            return len(x)
        if x[0] == y[0]:
            return go(x[1:], y[1:])
        return 1 + min(go(x[1:], y), go(x, y[1:]), go(x[1:], y[1:]))
    return go(a, b)
""",
tests=[["kitten", "sitting"], ["", "abc"], ["same", "same"], ["abc", ""], ["flaw", "lawn"]]
 + [[word(R.randint(0, 8), "abc"), word(R.randint(0, 8), "abc")] for _ in range(4)]))

SPECS.append(dict(id="emb-030", difficulty="competition",
question="""Two scribes copied the same manuscript, each making mistakes. The scholars want the length of the longest common subsequence of the two copies: the longest string that can be obtained from both by deleting characters.

-----Input-----
Two lines, each a string of 1 to 3000 lowercase letters.

-----Output-----
Print the length of the longest common subsequence.

{EXAMPLES}""",
solution="""a = input().strip()
b = input().strip()
prev = [0] * (len(b) + 1)
for x in a:
    cur = [0]
    for j, y in enumerate(b):
        cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
    prev = cur
print(prev[-1])
""",
brute="""from itertools import combinations
a = input().strip()
b = input().strip()
def subs(s):
    out = set()
    for r in range(len(s) + 1):
        for c in combinations(s, r):
            out.add(''.join(c))
    return out
print(max(len(s) for s in subs(a) & subs(b)))
""",
tests=["abcde\nace\n", "a\nb\n", "abc\nabc\n", "aaaa\naa\n", "xyzxyz\nzyxzyx\n"] + ["%s\n%s\n" % (word(R.randint(1, 9), "abc"), word(R.randint(1, 9), "abc")) for _ in range(4)]))

SPECS.append(dict(id="emb-031", difficulty="competition",
question="""A staircase has n steps. In one move you may climb any number of steps that belongs to a given set S. In how many different sequences of moves can you climb from the bottom to exactly step n? Two sequences differ if they differ in length or in some move. Print the answer modulo 1000000007.

-----Input-----
The first line contains n and s (1 <= n <= 10^5, 1 <= s <= 50). The second line contains the s distinct allowed step sizes, each between 1 and n.

-----Output-----
Print the number of sequences modulo 1000000007.

{EXAMPLES}""",
solution="""MOD = 10 ** 9 + 7
n, s = map(int, input().split())
steps = list(map(int, input().split()))
ways = [1] + [0] * n
for i in range(1, n + 1):
    total = 0
    for st in steps:
        if st <= i:
            total += ways[i - st]
    ways[i] = total % MOD
print(ways[n])
""",
brute="""import sys
sys.setrecursionlimit(10000)
n, s = map(int, input().split())
steps = list(map(int, input().split()))
def count(left):
    if left == 0:
        return 1
    return sum(count(left - st) for st in steps if st <= left)
print(count(n) % (10 ** 9 + 7))
""",
tests=["4 2\n1 2\n", "1 1\n1\n", "5 1\n2\n", "6 3\n1 3 5\n", "10 2\n3 7\n"]
 + ["%d %d\n%s\n" % (n, len(st), " ".join(map(str, st))) for n, st in [(n, R.sample(range(1, n + 1), R.randint(1, min(n, 4)))) for n in [R.randint(1, 22) for _ in range(4)]]]))

SPECS.append(dict(id="emb-032", difficulty="competition", fn_name="windowMaxima", params=["nums", "k"], wrap=True,
starter="class Solution:\n    def windowMaxima(self, nums, k):\n",
question="""A window of width k slides over the list nums from left to right, one position at a time. Return the list of the maximum inside each of the len(nums) - k + 1 windows.

Constraints: 1 <= k <= len(nums) <= 2*10^5. The solution should run in linear time.

{EXAMPLES}""",
solution="""from collections import deque
class Solution:
    def windowMaxima(self, nums, k):
        dq = deque()  # indices whose values decrease from front to back
        out = []
        for i, x in enumerate(nums):
            while dq and nums[dq[-1]] <= x:
                dq.pop()
            dq.append(i)
            if dq[0] <= i - k:
                dq.popleft()
            if i >= k - 1:
                out.append(nums[dq[0]])
        return out
""",
brute="""class Solution:
    def windowMaxima(self, nums, k):
        return [max(nums[i:i + k]) for i in range(len(nums) - k + 1)]
""",
tests=[[[1, 3, -1, -3, 5, 3, 6, 7], 3], [[4], 1], [[2, 2, 2], 2], [[9, 8, 7, 6], 4], [[1, 2, 3, 4], 1]]
 + [[a, R.randint(1, len(a))] for a in [ints(R.randint(1, 30), -9, 9) for _ in range(4)]]))

SPECS.append(dict(id="emb-033", difficulty="competition",
question="""The government wants to connect n villages with roads. There are m candidate roads; road i joins villages a_i and b_i and costs c_i. Choose roads so that every village can reach every other one, at the least total cost. If this is impossible, print IMPOSSIBLE.

-----Input-----
The first line contains n and m (1 <= n <= 10^5, 0 <= m <= 2*10^5). Each of the next m lines contains a_i, b_i, c_i (1 <= a_i, b_i <= n, 1 <= c_i <= 10^9).

-----Output-----
Print the least total cost, or IMPOSSIBLE.

{EXAMPLES}""",
solution="""import sys
data = sys.stdin.buffer.read().split()
n, m = int(data[0]), int(data[1])
edges = sorted((int(data[4 + 3 * i]), int(data[2 + 3 * i]), int(data[3 + 3 * i])) for i in range(m))
parent = list(range(n + 1))
def find(x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x
cost = used = 0
for c, a, b in edges:
    ra, rb = find(a), find(b)
    if ra != rb:
        parent[ra] = rb
        cost += c
        used += 1
print(cost if used == n - 1 else 'IMPOSSIBLE')
""",
brute="""import sys
data = sys.stdin.read().split()
n, m = int(data[0]), int(data[1])
edges = [(int(data[2 + 3 * i]), int(data[3 + 3 * i]), int(data[4 + 3 * i])) for i in range(m)]
inside = {1}
cost = 0
while len(inside) < n:
    best = None
    for a, b, c in edges:
        if (a in inside) != (b in inside) and (best is None or c < best[2]):
            best = (a, b, c)
    if best is None:
        break
    inside.update((best[0], best[1]))
    cost += best[2]
print(cost if len(inside) == n else 'IMPOSSIBLE')
""",
tests=["4 5\n1 2 1\n2 3 2\n3 4 3\n1 4 4\n1 3 1\n", "1 0\n", "3 1\n1 2 5\n", "2 3\n1 2 9\n2 1 4\n1 1 1\n", "3 3\n1 2 7\n2 3 7\n1 3 7\n"]
 + [graph(connect=True) for _ in range(3)] + [graph() for _ in range(2)]))
