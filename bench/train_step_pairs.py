"""The training-step benchmark's data (bench/train_step.py): 16 fixed preference pairs, the same every run."""

from __future__ import annotations

# 16 fixed preference pairs: a realistic mix of chat requests, a good answer and a worse one each.
PAIRS = [
    (
        "How do I remove duplicates from a Python list but keep the original order?",
        "Use a dict, since dicts keep insertion order (Python 3.7+):\n\n```python\nitems = [3, 1, 3, 2, 1]\nunique = "
        "list(dict.fromkeys(items))  # [3, 1, 2]\n```\n\n`dict.fromkeys` keeps the first occurrence of each value and "
        "drops later ones, in one pass. It needs hashable items. For unhashable ones such as lists, loop and keep a "
        "`seen` list instead, which is slower but works for any type.",
        "Just use set(): `unique = list(set(items))`. Sets remove duplicates automatically and it is the fastest way. "
        "The order might change a bit but that usually does not matter for most programs, so I would not worry about "
        "it.",
    ),
    (
        "My homemade bread came out dense and didn't rise much. What went wrong?",
        "A few usual suspects: 1) Yeast: old or killed by water hotter than about 45 C; proof it in warm water with a "
        "pinch of sugar and look for foam after 10 minutes. 2) Too little kneading, so the gluten can't hold gas; "
        "knead until the dough stretches thin without tearing. 3) Too short a rise or a cold kitchen; let it double "
        "in size rather than watching the clock. 4) Too much flour, which makes a stiff dough. Change one thing at a "
        "time next bake.",
        "Bread is tricky. Maybe try a different recipe or buy a bread machine, they do everything for you. Some "
        "flours just don't work well either, so switching brands could help. Good luck next time!",
    ),
    (
        "What should I pack for a three-day hiking trip in the mountains in autumn?",
        "Plan for cold nights and changing weather. Clothing: moisture-wicking base layers, a fleece, a waterproof "
        "shell, warm hat, gloves and two pairs of wool socks. Shelter and sleep: tent, a sleeping bag rated near "
        "freezing, and an insulated pad. Food and water: about 1 kg of food per day, a stove, and a filter. Safety: "
        "map and compass or GPS, headlamp, first-aid kit, and tell someone your route. Check the forecast the day "
        "before.",
        "Bring a backpack with some snacks, a water bottle and a jacket. Autumn is usually nice weather so you don't "
        "need much. Your phone can handle navigation and light, so there is no need for extra gear.",
    ),
    (
        "How much water should an adult drink each day?",
        "There isn't one number for everyone. A common guideline is about 2.7 litres of total water a day for women "
        "and 3.7 litres for men, from all drinks and food, and food supplies roughly a fifth of that. You need more "
        "in hot weather, during exercise, or when ill with fever. A practical check: if you rarely feel thirsty and "
        "your urine is pale yellow, you are probably drinking enough. People with heart or kidney conditions should "
        "follow their doctor's advice.",
        "Everyone needs exactly eight glasses of water a day, no more and no less. Coffee and tea don't count "
        "because they dehydrate you. If you drink less than that you will definitely become dehydrated.",
    ),
    (
        "What's the difference between a Roth IRA and a traditional IRA?",
        "The main difference is when you pay tax. Traditional IRA: contributions may be tax-deductible now, the money "
        "grows tax-deferred, and withdrawals in retirement are taxed as income; required minimum distributions start "
        "in your 70s. Roth IRA: you contribute after-tax money, and qualified withdrawals in retirement are tax-free, "
        "with no required distributions for the owner. A Roth tends to win if you expect a higher tax rate later; a "
        "traditional IRA if you expect a lower one.",
        "A Roth IRA is for young people and a traditional IRA is for older people. With a Roth you never pay taxes "
        "on anything, and with a traditional IRA you pay taxes twice, so the Roth is always better.",
    ),
    (
        "Can you help me write a polite email declining a meeting invitation?",
        "Sure, here is a short version you can adapt:\n\nSubject: Re: Project sync on Thursday\n\nHi Maria,\n\nThank "
        "you for the invitation. Unfortunately I can't join on Thursday because of a prior commitment. Could you "
        "share the notes afterwards? If my input is needed, I'm happy to send comments beforehand or find another "
        "time that works.\n\nBest regards,\nSam",
        "Just write: 'I can't come to the meeting.' People are busy, and a short email is fine. No need to explain "
        "yourself or offer anything else.",
    ),
    (
        "Why is the sky blue?",
        "Sunlight contains all colours. As it passes through the atmosphere it scatters off the nitrogen and oxygen "
        "molecules, and this Rayleigh scattering is much stronger for short wavelengths: blue light scatters roughly "
        "five times more than red. So blue light reaches your eyes from every direction of the sky. We don't see it "
        "as violet because sunlight has less violet and our eyes are less sensitive to it. At sunset light travels "
        "through more air, the blue is scattered away, and reds remain.",
        "The sky is blue because it reflects the colour of the oceans. Since most of the Earth is covered by water, "
        "the light bounces off the sea and up into the sky, making it look blue.",
    ),
    (
        "How do I undo my last git commit but keep the changes?",
        "Run `git reset --soft HEAD~1`. It moves the branch back one commit and leaves the changes staged, so you can "
        "edit and commit again. Use `git reset HEAD~1` (mixed, the default) to keep the changes unstaged instead. If "
        "you already pushed the commit, prefer `git revert HEAD`, which adds a new commit undoing it without "
        "rewriting shared history. Avoid `--hard` here: it throws the changes away.",
        "Use `git reset --hard HEAD~1`. That removes the last commit completely. Then just redo your work and "
        "commit again.",
    ),
    (
        "Write a SQL query to get the second highest salary from an employees table.",
        "One portable way:\n\n```sql\nSELECT MAX(salary) AS second_highest\nFROM employees\nWHERE salary < (SELECT "
        "MAX(salary) FROM employees);\n```\n\nIt returns NULL when there is no second distinct salary. With window "
        "functions you can generalise to the n-th highest: `SELECT DISTINCT salary FROM (SELECT salary, DENSE_RANK() "
        "OVER (ORDER BY salary DESC) AS r FROM employees) t WHERE r = 2;`",
        "SELECT salary FROM employees ORDER BY salary DESC LIMIT 2;\n\nThis gives you the second highest salary.",
    ),
    (
        "The leaves on my tomato plants are turning yellow from the bottom up. What should I do?",
        "Yellowing that starts on the lowest leaves is most often a nitrogen shortage or early blight. Check the "
        "leaves: plain yellowing points to nutrients, so feed with a balanced fertiliser. Brown spots with rings "
        "suggest early blight: remove affected leaves, water at the base in the morning instead of wetting the "
        "foliage, and mulch to stop soil splashing. Overwatering causes yellowing too, so let the top few "
        "centimetres of soil dry between waterings.",
        "Yellow leaves mean the plant is dying. You should pull it out and plant a new one, because once tomatoes "
        "start turning yellow there is nothing you can do to save them.",
    ),
    (
        "Briefly, what were the main causes of World War I?",
        "Historians usually point to four long-term causes: militarism (an arms race, especially between Britain and "
        "Germany), alliances (Triple Entente vs Triple Alliance, which turned a local conflict into a continental "
        "war), imperialism (rivalry over colonies and markets) and nationalism (notably in the Balkans). The trigger "
        "was the assassination of Archduke Franz Ferdinand in Sarajevo in June 1914, after which Austria-Hungary's "
        "ultimatum to Serbia set the alliance system in motion.",
        "World War I started because Germany invaded Poland in 1939. Hitler wanted more land, and the other "
        "countries had to stop him.",
    ),
    (
        "Explain the derivative of x squared in an intuitive way.",
        "Picture a square with side x; its area is x squared. Grow the side by a tiny amount h. The new area gains two "
        "thin strips of size x by h, plus a tiny corner of h by h. So the area grows by about 2xh, and the corner is "
        "negligible when h is small. Dividing the growth by h gives the rate of change: 2x. That's why the derivative "
        "of x squared is 2x: a bigger square gains area faster for the same small stretch of its side.",
        "The derivative of x squared is 2x. You bring the power down and subtract one. That's just the rule, you "
        "have to memorise it.",
    ),
    (
        "I work from home and keep getting distracted. Any tips to focus?",
        "A few things that help many people: keep a dedicated workspace you only use for work; plan the day the "
        "evening before with two or three priority tasks; work in focused blocks, such as 50 minutes on and 10 off; "
        "put your phone in another room and block distracting sites during those blocks; and keep a fixed start and "
        "stop time so work does not bleed into the evening. Try one or two changes for a week before adding more.",
        "Just try harder to concentrate. Distraction is mostly a matter of willpower, so if you really want to focus, "
        "you will.",
    ),
    (
        "How can I find the largest files on my Linux system?",
        "From the directory you want to check, run:\n\n```bash\nsudo du -ah . 2>/dev/null | sort -rh | head -n 20\n```"
        "\n\nIt lists the 20 biggest files and directories. For files only, above a size: `sudo find / -xdev -type f "
        "-size +500M -exec ls -lh {} +`. The `-xdev` flag keeps find on one filesystem. For an interactive view, "
        "install `ncdu` and run `ncdu /`.",
        "Open the file manager and look through the folders to see which ones seem big. You can also delete things "
        "in /usr if you need space, since it's mostly unused programs.",
    ),
    (
        "How can I help my six-year-old learn to read?",
        "Read aloud together every day and let them see you enjoy books. Practise letter sounds (phonics) with short "
        "games, then blend sounds into simple words like cat and sun. Choose decodable books that match the sounds "
        "they know, and let them read to you, helping gently rather than correcting every slip. Point out words in "
        "daily life: signs, labels, menus. Keep sessions short and fun, ten to fifteen minutes, and praise effort.",
        "Kids learn to read at school, so you don't really need to do anything. Giving them a tablet with reading "
        "apps is enough.",
    ),
    (
        "I'm a complete beginner. How should I start running?",
        "Start with run-walk intervals three times a week: for example, alternate one minute of easy running with two "
        "minutes of walking for 20 to 30 minutes. Each week, lengthen the running parts a little, and keep the pace "
        "easy enough that you could talk in full sentences. Take rest days between runs, get shoes that feel "
        "comfortable, and increase your weekly total by no more than about ten percent. Sharp pain means stop.",
        "Go out and run as far and as fast as you can every day. The more it hurts, the faster you improve, so push "
        "through any pain.",
    ),
]


def preference_rows() -> list[dict]:
    """The pairs in TRL's conversational preference format (what core.data.trainsets' preference builder emits)."""
    return [
        {
            "prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
        }
        for prompt, chosen, rejected in PAIRS
    ]
