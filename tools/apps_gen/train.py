import random
R = random.Random(44)
SPECS = []
SPECS.append(dict(id="train-001", difficulty="introductory", n_examples=1,
question="""Read two integers a and b and print their sum.

-----Input-----
One line with two integers a and b (|a|, |b| <= 10^18).

-----Output-----
Print a + b.

{EXAMPLES}""",
solution="""a, b = map(int, input().split())
print(a + b)
""",
tests=["2 3\n", "-5 5\n", "0 0\n", "1000000000000000000 1000000000000000000\n", "-7 -8\n"]))
SPECS.append(dict(id="train-002", difficulty="introductory", fn_name="count_words", params=["sentence"], n_examples=1,
starter="def count_words(sentence):\n",
question="""Write count_words(sentence) that returns the number of words in sentence, where words are separated by one or more spaces.

{EXAMPLES}""",
solution="""def count_words(sentence):
    return len(sentence.split())
""",
tests=[["the quick brown fox"], [""], ["  padded   words "], ["one"], ["a b c d e f"]]))
SPECS.append(dict(id="train-003", difficulty="interview", fn_name="maxProfit", params=["prices"], wrap=True, n_examples=1,
starter="class Solution:\n    def maxProfit(self, prices):\n",
question="""prices[i] is the price of a share on day i. Buy one share on some day and sell it on a later day. Return the largest possible profit, or 0 if no trade makes money.

{EXAMPLES}""",
solution="""class Solution:
    def maxProfit(self, prices):
        low = float('inf')
        best = 0
        for p in prices:
            low = min(low, p)
            best = max(best, p - low)
        return best
""",
tests=[[[7, 1, 5, 3, 6, 4]], [[7, 6, 4, 3, 1]], [[1]], [[2, 4, 1, 7]], [[3, 3, 3]]]))
SPECS.append(dict(id="train-004", difficulty="introductory", n_examples=1,
question="""The Fibonacci numbers are F_0 = 0, F_1 = 1 and F_n = F_(n-1) + F_(n-2). Given n, print F_n.

-----Input-----
One integer n (0 <= n <= 90).

-----Output-----
Print F_n.

{EXAMPLES}""",
solution="""n = int(input())
a, b = 0, 1
for _ in range(n):
    a, b = b, a + b
print(a)
""",
tests=["10\n", "0\n", "1\n", "2\n", "90\n"]))
SPECS.append(dict(id="train-005", difficulty="interview", n_examples=1,
question="""Given n integers, print how many different values appear among them.

-----Input-----
The first line contains n (1 <= n <= 10^5). The second line contains n integers.

-----Output-----
Print the number of distinct values.

{EXAMPLES}""",
solution="""input()
print(len(set(input().split())))
""",
tests=["5\n1 2 2 3 1\n", "1\n42\n", "3\n7 7 7\n", "4\n-1 1 -1 1\n", "6\n1 2 3 4 5 6\n"]))
