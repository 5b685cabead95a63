import random
R = random.Random(22)
def ints(n, lo, hi): return [R.randint(lo, hi) for _ in range(n)]
def word(n, alpha="abcdefghijklmnopqrstuvwxyz"): return "".join(R.choice(alpha) for _ in range(n))
def grid(n, m, p, chars=".#"):
    return ["".join(chars[1] if R.random() < p else chars[0] for _ in range(m)) for _ in range(n)]

SPECS = []

SPECS.append(dict(id="emb-013", difficulty="interview",
question="""A radio scanner shows a string of channel letters. Find the length of the longest contiguous piece of the string that uses at most k distinct letters.

-----Input-----
The first line contains an integer k (1 <= k <= 26). The second line contains a string s of 1 to 10^5 lowercase letters.

-----Output-----
Print the maximum length of a substring of s with at most k distinct letters.

{EXAMPLES}""",
solution="""from collections import defaultdict
k = int(input())
s = input().strip()
cnt = defaultdict(int)
left = best = 0
for right, c in enumerate(s):
    cnt[c] += 1
    while len(cnt) > k:
        cnt[s[left]] -= 1
        if cnt[s[left]] == 0:
            del cnt[s[left]]
        left += 1
    best = max(best, right - left + 1)
print(best)
""",
brute="""k = int(input())
s = input().strip()
best = 0
for i in range(len(s)):
    for j in range(i, len(s)):
        if len(set(s[i:j + 1])) <= k:
            best = max(best, j - i + 1)
print(best)
""",
tests=["2\neceba\n", "1\naaaa\n", "3\nabc\n", "1\nabcabc\n", "2\naabbccbb\n"]
 + ["%d\n%s\n" % (R.randint(1, 4), word(R.randint(1, 60), "abcde")) for _ in range(4)]))

SPECS.append(dict(id="emb-014", difficulty="interview",
question="""Given n integers and a number k, count the pairs of positions i < j such that a_i + a_j is divisible by k.

-----Input-----
The first line contains n and k (1 <= n <= 2*10^5, 1 <= k <= 10^9). The second line contains n integers 0 <= a_i <= 10^9.

-----Output-----
Print the number of such pairs.

{EXAMPLES}""",
solution="""from collections import Counter
n, k = map(int, input().split())
a = list(map(int, input().split()))
seen = Counter()
pairs = 0
for x in a:
    r = x % k
    pairs += seen[(k - r) % k]
    seen[r] += 1
print(pairs)
""",
brute="""n, k = map(int, input().split())
a = list(map(int, input().split()))
print(sum(1 for i in range(n) for j in range(i + 1, n) if (a[i] + a[j]) % k == 0))
""",
tests=["5 3\n1 2 3 4 5\n", "1 1\n7\n", "4 1\n1 2 3 4\n", "3 10\n5 5 5\n", "4 4\n2 6 10 3\n"]
 + ["%d %d\n%s\n" % (n, k, " ".join(map(str, ints(n, 0, 10**9)))) for n, k in [(R.randint(1, 50), R.randint(1, 12)) for _ in range(4)]]))

SPECS.append(dict(id="emb-015", difficulty="interview", fn_name="minCoins", params=["coins", "amount"],
starter="class Solution:\n    def minCoins(self, coins, amount):\n",
question="""You have an unlimited supply of coins of each value in coins (positive integers). Return the smallest number of coins that add up to exactly amount, or -1 if it cannot be done. An amount of 0 needs 0 coins.

Constraints: 1 <= len(coins) <= 12, 1 <= coins[i] <= 10^4, 0 <= amount <= 10^4.

{EXAMPLES}""",
solution="""class Solution:
    def minCoins(self, coins, amount):
        INF = float('inf')
        best = [0] + [INF] * amount
        for v in range(1, amount + 1):
            for c in coins:
                if c <= v and best[v - c] + 1 < best[v]:
                    best[v] = best[v - c] + 1
        return -1 if best[amount] == INF else best[amount]
""",
brute="""from collections import deque
class Solution:
    def minCoins(self, coins, amount):
        dist = {0: 0}
        q = deque([0])
        while q:
            v = q.popleft()
            if v == amount:
                return dist[v]
            for c in coins:
                w = v + c
                if w <= amount and w not in dist:
                    dist[w] = dist[v] + 1
                    q.append(w)
        return -1
""",
tests=[[[1, 2, 5], 11], [[2], 3], [[7], 0], [[1], 1], [[3, 7], 11], [[9, 6, 5, 1], 11]]
 + [[sorted(set(ints(R.randint(1, 4), 2, 20))), R.randint(0, 200)] for _ in range(3)]))

def rand_intervals():
    out = []
    for _ in range(R.randint(1, 10)):
        a = R.randint(0, 30); out.append([a, a + R.randint(0, 6)])
    return out

SPECS.append(dict(id="emb-016", difficulty="interview", fn_name="merge_intervals", params=["intervals"], wrap=True,
starter="def merge_intervals(intervals):\n",
question="""Each element of intervals is a closed interval [start, end] with start <= end, in no particular order. Merge all intervals that overlap or touch (share an end point) and return the merged intervals sorted by start.

{EXAMPLES}""",
solution="""def merge_intervals(intervals):
    merged = []
    for s, e in sorted(intervals):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return merged
""",
brute="""def merge_intervals(intervals):
    if not intervals:
        return []
    pts = set()
    for s, e in intervals:
        pts.update(range(2 * s, 2 * e + 1))
    pts = sorted(pts)
    out = [[pts[0], pts[0]]]
    for p in pts[1:]:
        if p == out[-1][1] + 1:
            out[-1][1] = p
        else:
            out.append([p, p])
    return [[a // 2, b // 2] for a, b in out]
""",
tests=[[[[1, 3], [2, 6], [8, 10], [15, 18]]], [[[1, 4], [4, 5]]], [[]], [[[5, 5]]], [[[6, 8], [1, 2], [3, 4]]]]
 + [[rand_intervals()] for _ in range(4)]))

def maze():
    n, m = R.randint(1, 7), R.randint(1, 7)
    g = [list(r) for r in grid(n, m, 0.3)]
    cells = [(i, j) for i in range(n) for j in range(m)]
    (si, sj), (ti, tj) = R.sample(cells, 2) if len(cells) > 1 else (cells[0], cells[0])
    g[si][sj] = "S"; g[ti][tj] = "T"
    if (si, sj) == (ti, tj):
        return None
    return "%d %d\n%s\n" % (n, m, "\n".join("".join(r) for r in g))
mazes = [x for x in (maze() for _ in range(12)) if x][:4]

SPECS.append(dict(id="emb-017", difficulty="interview",
question="""A robot stands on cell S of a rectangular warehouse map and must reach cell T. In one step it moves to a side-adjacent cell; it cannot enter walls (#) or leave the map. Find the minimum number of steps, or -1 if T cannot be reached.

-----Input-----
The first line contains n and m (1 <= n, m <= 1000). Each of the next n lines contains m characters: '.' free, '#' wall, 'S' start, 'T' target. S and T appear exactly once each.

-----Output-----
Print the minimum number of steps, or -1.

{EXAMPLES}""",
solution="""import sys
from collections import deque
data = sys.stdin.read().split()
n, m = int(data[0]), int(data[1])
g = data[2:2 + n]
for i in range(n):
    for j in range(m):
        if g[i][j] == 'S':
            start = (i, j)
dist = {start: 0}
q = deque([start])
ans = -1
while q:
    i, j = q.popleft()
    if g[i][j] == 'T':
        ans = dist[(i, j)]
        break
    for a, b in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
        if 0 <= a < n and 0 <= b < m and g[a][b] != '#' and (a, b) not in dist:
            dist[(a, b)] = dist[(i, j)] + 1
            q.append((a, b))
print(ans)
""",
brute="""import sys
data = sys.stdin.read().split()
n, m = int(data[0]), int(data[1])
g = data[2:2 + n]
INF = 10 ** 9
d = [[INF] * m for _ in range(n)]
for i in range(n):
    for j in range(m):
        if g[i][j] == 'S':
            d[i][j] = 0
changed = True
while changed:
    changed = False
    for i in range(n):
        for j in range(m):
            if g[i][j] == '#':
                continue
            for a, b in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
                if 0 <= a < n and 0 <= b < m and d[a][b] + 1 < d[i][j]:
                    d[i][j] = d[a][b] + 1
                    changed = True
for i in range(n):
    for j in range(m):
        if g[i][j] == 'T':
            print(d[i][j] if d[i][j] < INF else -1)
""",
tests=["3 4\nS..#\n.#..\n...T\n", "1 2\nST\n", "2 2\nS#\n#T\n", "3 3\nS#.\n.#.\n..T\n", "1 5\nT...S\n"] + mazes))

SPECS.append(dict(id="emb-018", difficulty="interview", fn_name="lengthOfLIS", params=["nums"],
starter="class Solution:\n    def lengthOfLIS(self, nums):\n",
question="""Return the length of the longest strictly increasing subsequence of the list nums (elements kept in their original order, not necessarily adjacent). The empty list has answer 0.

Constraints: 0 <= len(nums) <= 10^5.

{EXAMPLES}""",
solution="""import bisect
class Solution:
    def lengthOfLIS(self, nums):
        tails = []
        for x in nums:
            k = bisect.bisect_left(tails, x)
            if k == len(tails):
                tails.append(x)
            else:
                tails[k] = x
        return len(tails)
""",
brute="""class Solution:
    def lengthOfLIS(self, nums):
        n, best = len(nums), 0
        for mask in range(1 << n):
            seq = [nums[i] for i in range(n) if mask >> i & 1]
            if all(a < b for a, b in zip(seq, seq[1:])):
                best = max(best, len(seq))
        return best
""",
tests=[[[10, 9, 2, 5, 3, 7, 101, 18]], [[]], [[4, 4, 4]], [[1, 2, 3, 4]], [[5, 4, 3, 2, 1]]]
 + [[ints(R.randint(1, 13), -5, 5)] for _ in range(4)]))

def brackets(n):
    s = ""
    for _ in range(n):
        s += R.choice("()[]{}") if R.random() < 0.3 else ""
    stack, out = [], []
    for _ in range(n):
        if stack and R.random() < 0.5:
            out.append(stack.pop())
        else:
            o = R.choice("([{"); out.append(o); stack.append({"(": ")", "[": "]", "{": "}"}[o])
    out += stack[::-1]
    t = "".join(out)
    if R.random() < 0.5 and len(t) > 1:
        i = R.randrange(len(t)); t = t[:i] + R.choice("()[]{}") + t[i + 1:]
    return t

SPECS.append(dict(id="emb-019", difficulty="interview",
question="""A bracket sequence made of the characters ()[]{} is balanced if every opening bracket is closed by the bracket of the same type, in the right order. For each of t sequences, say whether it is balanced.

-----Input-----
The first line contains t (1 <= t <= 1000). Each of the next t lines contains a non-empty sequence of at most 10^4 bracket characters.

-----Output-----
For each sequence print YES if it is balanced and NO otherwise.

{EXAMPLES}""",
solution="""t = int(input())
pair = {')': '(', ']': '[', '}': '{'}
for _ in range(t):
    s = input().strip()
    stack = []
    ok = True
    for c in s:
        if c in '([{':
            stack.append(c)
        elif not stack or stack.pop() != pair[c]:
            ok = False
            break
    print('YES' if ok and not stack else 'NO')
""",
brute="""t = int(input())
for _ in range(t):
    s = input().strip()
    prev = None
    while prev != s:
        prev = s
        s = s.replace('()', '').replace('[]', '').replace('{}', '')
    print('NO' if s else 'YES')
""",
tests=["3\n([]{})\n(]\n((\n", "1\n)\n", "2\n{[()()]}\n}{\n", "1\n()[]{}\n", "2\n([)]\n[\n"]
 + ["6\n%s\n" % "\n".join(brackets(R.randint(1, 8)) for _ in range(6)) for _ in range(3)]))

def topk():
    ws = [word(R.randint(1, 2), "abc") for _ in range(R.randint(1, 15))]
    return [ws, R.randint(1, len(set(ws)))]

SPECS.append(dict(id="emb-020", difficulty="interview", fn_name="top_k_frequent", params=["words", "k"], wrap=True,
starter="def top_k_frequent(words, k):\n",
question="""Return the k most frequent words of the list words, most frequent first. Words with equal frequency are ordered alphabetically. It is guaranteed that 1 <= k <= the number of distinct words.

{EXAMPLES}""",
solution="""from collections import Counter
def top_k_frequent(words, k):
    cnt = Counter(words)
    return sorted(cnt, key=lambda w: (-cnt[w], w))[:k]
""",
brute="""def top_k_frequent(words, k):
    distinct = sorted(set(words))
    out = []
    for _ in range(k):
        best = None
        for w in distinct:
            if w in out:
                continue
            if best is None or words.count(w) > words.count(best):
                best = w
        out.append(best)
    return out
""",
tests=[[["apple", "bee", "apple", "cat", "bee", "apple"], 2], [["x"], 1], [["b", "a", "c"], 3], [["d", "d", "c", "c", "e"], 2], [["to", "be", "or", "not", "to", "be"], 3]]
 + [topk() for _ in range(3)]))

def rq():
    n = R.randint(1, 15); a = ints(n, -100, 100); q = R.randint(1, 8)
    qs = []
    for _ in range(q):
        l = R.randint(1, n); r = R.randint(l, n); qs.append(f"{l} {r}")
    return "%d %d\n%s\n%s\n" % (n, q, " ".join(map(str, a)), "\n".join(qs))

SPECS.append(dict(id="emb-021", difficulty="interview",
question="""Given an array of n integers, answer q queries: each query gives l and r and asks for a_l + a_(l+1) + ... + a_r (positions start at 1).

-----Input-----
The first line contains n and q (1 <= n, q <= 2*10^5). The second line contains the n integers (|a_i| <= 10^9). Each of the next q lines contains l and r (1 <= l <= r <= n).

-----Output-----
Print the answer to each query on its own line.

{EXAMPLES}""",
solution="""import sys
data = sys.stdin.buffer.read().split()
n, q = int(data[0]), int(data[1])
prefix = [0]
for x in data[2:2 + n]:
    prefix.append(prefix[-1] + int(x))
out = []
pos = 2 + n
for _ in range(q):
    l, r = int(data[pos]), int(data[pos + 1])
    pos += 2
    out.append(prefix[r] - prefix[l - 1])
print('\\n'.join(map(str, out)))
""",
brute="""n, q = map(int, input().split())
a = list(map(int, input().split()))
for _ in range(q):
    l, r = map(int, input().split())
    print(sum(a[l - 1:r]))
""",
tests=["5 3\n1 2 3 4 5\n1 5\n2 3\n4 4\n", "1 1\n-7\n1 1\n", "3 2\n1000000000 1000000000 1000000000\n1 3\n2 3\n"] + [rq() for _ in range(4)]))

SPECS.append(dict(id="emb-022", difficulty="interview", fn_name="rotateClockwise", params=["grid"], wrap=True,
starter="class Solution:\n    def rotateClockwise(self, grid):\n",
question="""grid is a rectangular matrix given as a list of rows (at least one row, all rows of equal non-zero length). Return the matrix rotated 90 degrees clockwise, as a new list of rows.

{EXAMPLES}""",
solution="""class Solution:
    def rotateClockwise(self, grid):
        return [list(row) for row in zip(*grid[::-1])]
""",
brute="""class Solution:
    def rotateClockwise(self, grid):
        n, m = len(grid), len(grid[0])
        out = [[None] * n for _ in range(m)]
        for i in range(n):
            for j in range(m):
                out[j][n - 1 - i] = grid[i][j]
        return out
""",
tests=[[[[1, 2], [3, 4]]], [[[1, 2, 3]]], [[[1], [2], [3]]], [[[7]]], [[[1, 2, 3], [4, 5, 6]]]]
 + [[[ints(c, 0, 9) for _ in range(r)]] for r, c in [(R.randint(1, 4), R.randint(1, 4)) for _ in range(2)]]))

def isl():
    n, m = R.randint(1, 8), R.randint(1, 8)
    return "%d %d\n%s\n" % (n, m, "\n".join(grid(n, m, 0.45, "01")))

SPECS.append(dict(id="emb-023", difficulty="interview",
question="""A satellite photo is an n by m grid where 1 is land and 0 is water. An island is a group of land cells connected through shared sides (not corners). Count the islands.

-----Input-----
The first line contains n and m (1 <= n, m <= 500). Each of the next n lines is a string of m characters 0 or 1.

-----Output-----
Print the number of islands.

{EXAMPLES}""",
solution="""import sys
data = sys.stdin.read().split()
n, m = int(data[0]), int(data[1])
g = data[2:2 + n]
seen = [[False] * m for _ in range(n)]
count = 0
for i in range(n):
    for j in range(m):
        if g[i][j] == '1' and not seen[i][j]:
            count += 1
            seen[i][j] = True
            stack = [(i, j)]
            while stack:
                a, b = stack.pop()
                for x, y in ((a + 1, b), (a - 1, b), (a, b + 1), (a, b - 1)):
                    if 0 <= x < n and 0 <= y < m and g[x][y] == '1' and not seen[x][y]:
                        seen[x][y] = True
                        stack.append((x, y))
print(count)
""",
brute="""import sys
data = sys.stdin.read().split()
n, m = int(data[0]), int(data[1])
g = data[2:2 + n]
parent = {}
def find(x):
    while parent[x] != x:
        x = parent[x]
    return x
for i in range(n):
    for j in range(m):
        if g[i][j] == '1':
            parent[(i, j)] = (i, j)
for i in range(n):
    for j in range(m):
        if g[i][j] == '1':
            for a, b in ((i + 1, j), (i, j + 1)):
                if a < n and b < m and g[a][b] == '1':
                    parent[find((i, j))] = find((a, b))
print(len({find(c) for c in parent}))
""",
tests=["3 4\n1100\n0101\n0011\n", "1 1\n0\n", "1 1\n1\n", "2 2\n10\n01\n", "3 3\n111\n101\n111\n"] + [isl() for _ in range(4)]))

def runs_enc():
    parts = []
    prev = None
    for _ in range(R.randint(0, 6)):
        c = R.choice("abcxyz")
        parts.append(f"{R.randint(1, 12)}{c}")
    return ["".join(parts)]

SPECS.append(dict(id="emb-024", difficulty="interview", fn_name="decode_runs", params=["s"],
starter="def decode_runs(s):\n",
question="""A run-length code is a sequence of groups, each a positive decimal count (possibly several digits, no leading zeros) followed by one lowercase letter; the group "12a" stands for twelve letters a. Write decode_runs(s) returning the decoded string (the empty code decodes to the empty string).

{EXAMPLES}""",
solution="""def decode_runs(s):
    out = []
    count = 0
    for c in s:
        if c.isdigit():
            count = count * 10 + int(c)
        else:
            out.append(c * count)
            count = 0
    return ''.join(out)
""",
brute="""import re
def decode_runs(s):
    return ''.join(ch * int(num) for num, ch in re.findall(r'(\\d+)([a-z])', s))
""",
tests=[["3a2b"], [""], ["1z"], ["10x1y"], ["2a2a"]] + [runs_enc() for _ in range(3)]))
