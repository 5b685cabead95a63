import random
R = random.Random(11)
def ints(n, lo, hi): return [R.randint(lo, hi) for _ in range(n)]
def arr_in(a): return f"{len(a)}\n{' '.join(map(str, a))}\n"
def word(n, alpha="abcdefghijklmnopqrstuvwxyz"): return "".join(R.choice(alpha) for _ in range(n))

SPECS = []

SPECS.append(dict(id="emb-001", difficulty="introductory",
question="""A farmer weighs the melons of a harvest one by one. Only melons of even weight can be packed into the standard crates. Find the total weight of the melons that can be packed.

-----Input-----
The first line contains an integer n (1 <= n <= 1000), the number of melons.
The second line contains n integers w_1, ..., w_n (-10^6 <= w_i <= 10^6; a negative weight is a scale error but still counts by its parity).

-----Output-----
Print one integer: the sum of all even w_i (0 if there are none).

{EXAMPLES}""",
solution="""n = int(input())
w = list(map(int, input().split()))
print(sum(x for x in w if x % 2 == 0))
""",
brute="""import sys
d = sys.stdin.read().split()
n = int(d[0]); t = 0
for i in range(n):
    x = int(d[1 + i])
    if abs(x) % 2 == 0:
        t += x
print(t)
""",
tests=[arr_in([1, 2, 3, 4]), arr_in([7]), arr_in([-4, 5, 6]), arr_in([0, 0, 1]), arr_in([1, 3, 5, 7])]
 + [arr_in(ints(R.randint(1, 30), -1000, 1000)) for _ in range(4)]))

SPECS.append(dict(id="emb-002", difficulty="introductory",
question="""For each of t words, count how many of its letters are vowels. The vowels are a, e, i, o, u (the letter y is not a vowel here).

-----Input-----
The first line contains t (1 <= t <= 100). Each of the next t lines contains one word of 1 to 50 lowercase English letters.

-----Output-----
For each word print the number of vowels in it, one per line.

{EXAMPLES}""",
solution="""t = int(input())
for _ in range(t):
    s = input().strip()
    print(sum(c in 'aeiou' for c in s))
""",
brute="""import sys
lines = sys.stdin.read().split('\\n')
t = int(lines[0])
for i in range(1, t + 1):
    c = 0
    for ch in lines[i].strip():
        if ch == 'a' or ch == 'e' or ch == 'i' or ch == 'o' or ch == 'u':
            c += 1
    print(c)
""",
tests=["3\nbanana\nsky\nqueue\n", "1\na\n", "2\nrhythm\naeiou\n", "1\nyyyy\n"]
 + ["%d\n%s\n" % (k, "\n".join(word(R.randint(1, 20)) for _ in range(k))) for k in (4, 7, 10)]))

SPECS.append(dict(id="emb-003", difficulty="introductory",
question="""A weather station recorded n hourly temperatures. The daily swing is the difference between the highest and the lowest reading. Print the swing.

-----Input-----
The first line contains n (1 <= n <= 1000). The second line contains n integers t_i (-100 <= t_i <= 100).

-----Output-----
Print the swing, max(t) - min(t).

{EXAMPLES}""",
solution="""input()
t = list(map(int, input().split()))
print(max(t) - min(t))
""",
brute="""input()
t = list(map(int, input().split()))
best = 0
for a in t:
    for b in t:
        best = max(best, a - b)
print(best)
""",
tests=[arr_in([3, -2, 7, 0]), arr_in([5]), arr_in([-100, 100]), arr_in([4, 4, 4])]
 + [arr_in(ints(R.randint(1, 40), -100, 100)) for _ in range(3)]))

SPECS.append(dict(id="emb-004", difficulty="introductory", fn_name="digit_sum", params=["n"],
starter="def digit_sum(n):\n",
question="""Write a function digit_sum(n) that returns the sum of the decimal digits of a non-negative integer n (0 <= n <= 10^18).

{EXAMPLES}""",
solution="""def digit_sum(n):
    total = 0
    while n > 0:
        total += n % 10
        n //= 10
    return total
""",
brute="""def digit_sum(n):
    return sum(int(c) for c in str(n))
""",
tests=[[0], [7], [1234], [1000000000000000000], [999999999999999999]] + [[R.randint(0, 10**12)] for _ in range(3)]))

SPECS.append(dict(id="emb-005", difficulty="introductory", fn_name="isLetterPalindrome", params=["s"],
starter="class Solution:\n    def isLetterPalindrome(self, s):\n",
question="""Given a string s, decide whether it reads the same forwards and backwards when only its letters are kept and upper case is treated as lower case. Digits, spaces and punctuation are ignored. A string with no letters counts as a palindrome.

Return True or False.

{EXAMPLES}""",
solution="""class Solution:
    def isLetterPalindrome(self, s):
        letters = [c.lower() for c in s if c.isalpha()]
        i, j = 0, len(letters) - 1
        while i < j:
            if letters[i] != letters[j]:
                return False
            i += 1
            j -= 1
        return True
""",
brute="""class Solution:
    def isLetterPalindrome(self, s):
        t = ''.join(c for c in s.lower() if c.isalpha())
        return t == t[::-1]
""",
tests=[["Step on no pets!"], ["Hello"], ["12321"], [""], ["A man, a plan: a canal -- Panama"], ["ab"], ["Noon 4 noon"]]))

SPECS.append(dict(id="emb-006", difficulty="introductory", fn_name="count_runs", params=["s"], wrap=True,
starter="def count_runs(s):\n",
question="""A run in a string is a maximal block of equal consecutive characters; for example "aabccc" has the runs "aa", "b" and "ccc". Write count_runs(s) returning the number of runs in s (0 for the empty string).

{EXAMPLES}""",
solution="""def count_runs(s):
    runs = 0
    for i, c in enumerate(s):
        if i == 0 or s[i - 1] != c:
            runs += 1
    return runs
""",
brute="""import itertools
def count_runs(s):
    return len(list(itertools.groupby(s)))
""",
tests=[["aabccc"], [""], ["z"], ["abab"], ["xxxxxx"]] + [[word(R.randint(1, 25), "ab")] for _ in range(3)]))

SPECS.append(dict(id="emb-007", difficulty="introductory",
question="""Count from 1 to n. Instead of each number divisible by a print the word P, instead of each number divisible by b print the word Q, and instead of a number divisible by both print P immediately followed by Q. Other numbers are printed as they are.

-----Input-----
One line with n a b P Q: integers 1 <= n <= 1000, 1 <= a, b <= 100, and two words of lowercase letters.

-----Output-----
Print n lines, the i-th for the number i.

{EXAMPLES}""",
solution="""n, a, b, p, q = input().split()
n, a, b = int(n), int(a), int(b)
for i in range(1, n + 1):
    s = (p if i % a == 0 else '') + (q if i % b == 0 else '')
    print(s or i)
""",
brute="""n, a, b, p, q = input().split()
n, a, b = int(n), int(a), int(b)
out = []
for i in range(1, n + 1):
    if i % a == 0 and i % b == 0:
        out.append(p + q)
    elif i % a == 0:
        out.append(p)
    elif i % b == 0:
        out.append(q)
    else:
        out.append(str(i))
print('\\n'.join(out))
""",
tests=["6 2 3 tick tock\n", "1 1 1 x y\n", "10 4 5 ping pong\n", "5 7 9 no way\n", "12 3 3 dup lic\n", "20 6 4 ab cd\n"]))

SPECS.append(dict(id="emb-008", difficulty="introductory", fn_name="twoSum", params=["nums", "target"], wrap=True,
starter="class Solution:\n    def twoSum(self, nums, target):\n",
question="""Given a list of integers nums and an integer target, return the indices [i, j] (i < j) of two numbers whose sum is target. If several pairs exist, return the one with the smallest j, and among those the smallest i. It is guaranteed that at least one pair exists.

{EXAMPLES}""",
solution="""class Solution:
    def twoSum(self, nums, target):
        first = {}
        for j, x in enumerate(nums):
            if target - x in first:
                return [first[target - x], j]
            first.setdefault(x, j)
""",
brute="""class Solution:
    def twoSum(self, nums, target):
        for j in range(len(nums)):
            for i in range(j):
                if nums[i] + nums[j] == target:
                    return [i, j]
""",
tests=[[[2, 7, 11, 15], 9], [[3, 3], 6], [[1, 5, 1, 5], 6], [[-1, 0, 1], 0], [[4, 1, 2, 3, 0], 3]]
 + [[a, a[R.randrange(len(a) - 1)] + a[-1]] for a in [ints(R.randint(2, 20), -9, 9) for _ in range(3)]]))

SPECS.append(dict(id="emb-009", difficulty="introductory",
question="""An exam was taken by n students. A student passes with a score of at least 50. Print how many students passed, and the average score rounded down to an integer.

-----Input-----
The first line contains n (1 <= n <= 1000). The second line contains n integer scores between 0 and 100.

-----Output-----
Print two integers separated by a space: the number of passing students and the floor of the average score.

{EXAMPLES}""",
solution="""n = int(input())
s = list(map(int, input().split()))
print(sum(x >= 50 for x in s), sum(s) // n)
""",
brute="""import math
n = int(input())
s = [int(x) for x in input().split()]
c = len([x for x in s if not x < 50])
print(str(c) + ' ' + str(math.floor(sum(s) / n + 1e-9)))
""",
tests=[arr_in([50, 49, 100]), arr_in([0]), arr_in([100, 100]), arr_in([10, 20, 30, 41]), arr_in([49, 50])]
 + [arr_in(ints(R.randint(1, 50), 0, 100)) for _ in range(3)]))

SPECS.append(dict(id="emb-010", difficulty="introductory", fn_name="second_largest", params=["nums"],
starter="def second_largest(nums):\n",
question="""Write second_largest(nums) that returns the second largest distinct value in the list nums, or None if nums has fewer than two distinct values.

{EXAMPLES}""",
solution="""def second_largest(nums):
    best = second = None
    for x in nums:
        if best is None or x > best:
            best, second = x, best
        elif x != best and (second is None or x > second):
            second = x
    return second
""",
brute="""def second_largest(nums):
    d = sorted(set(nums))
    return d[-2] if len(d) >= 2 else None
""",
tests=[[[3, 1, 4, 1, 5]], [[7, 7, 7]], [[]], [[-2, -5]], [[5, 5, 4]]] + [[ints(R.randint(1, 15), -5, 5)] for _ in range(4)]))

SPECS.append(dict(id="emb-011", difficulty="introductory",
question="""A message was typed backwards: the words are in reverse order. Restore it by printing the words of the line in reverse order, separated by single spaces.

-----Input-----
One line with 1 to 100 words separated by one or more spaces. Words consist of letters and digits.

-----Output-----
Print the words in reverse order separated by single spaces.

{EXAMPLES}""",
solution="""print(' '.join(reversed(input().split())))
""",
brute="""w = input().split()
out = []
for i in range(len(w) - 1, -1, -1):
    out.append(w[i])
print(' '.join(out))
""",
tests=["world hello\n", "single\n", "c  b   a\n", "  lead and trail  \n", "1 2 3 4 5 6\n"]
 + [" ".join(word(R.randint(1, 6)) for _ in range(R.randint(1, 10))) + "\n" for _ in range(2)]))

SPECS.append(dict(id="emb-012", difficulty="introductory", fn_name="interleave", params=["a", "b"], wrap=True,
starter="class Solution:\n    def interleave(self, a, b):\n",
question="""Given two strings a and b, build a new string by taking characters alternately from a and b, starting with a. When one string runs out, append the rest of the other. Return the result.

{EXAMPLES}""",
solution="""class Solution:
    def interleave(self, a, b):
        out = []
        for i in range(max(len(a), len(b))):
            if i < len(a):
                out.append(a[i])
            if i < len(b):
                out.append(b[i])
        return ''.join(out)
""",
brute="""class Solution:
    def interleave(self, a, b):
        a, b, out, turn = list(a), list(b), '', 0
        while a or b:
            src = a if (turn == 0 and a) or not b else b
            out += src.pop(0)
            turn = 1 - turn if (a and b) else turn
        return out
""",
tests=[["abc", "xyz"], ["ab", "wxyz"], ["", "q"], ["hello", ""], ["a", "b"], ["abcd", "1"]]))
