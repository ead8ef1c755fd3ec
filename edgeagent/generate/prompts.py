"""Built-in prompts: prose for fixed-length prompts, and everyday assistant requests where no
workload gives its own (bench agreement, OpenVINO's data-aware weight compression)."""

# Filler text for fixed-length prompts (written for this purpose; any ordinary prose serves).
PASSAGE = (
    "The old lighthouse keeper climbed the spiral stairs every evening at dusk. He wound the clockwork, "
    "trimmed the wick and polished the great lens until it gleamed. Ships passing the headland trusted the "
    "beam to guide them past the rocks, and in forty years no vessel had been lost on his watch. In winter the "
    "storms rattled the windows and the sea threw spray over the gallery rail, but the light never failed. "
    "When the harbour board finally installed an automatic lamp, he kept climbing the stairs anyway, "
    "because someone ought to make sure that the machine remembered what the light was for. ")

# Prompts for agreement when no workload gives its own: everyday assistant requests.
DEFAULT_PROMPTS = (
    "Turn on the kitchen lights.", "Dim the living room lights to 30 percent.", "Set a timer for ten minutes.",
    "What is the temperature in the bedroom?", "Open the garage door.", "Lock the front door.",
    "Play some jazz in the office.", "Add milk to my shopping list.", "Is the back door locked?",
    "Turn off all the lights upstairs.", "What is the capital of France?", "Write a haiku about rain.",
    "Explain what a KV cache is in one sentence.", "Give me three names for a cat.",
    "How many legs does a spider have?", "Translate 'good morning' into Spanish.", "What is 12 times 7?",
    "Name a planet with rings.", "Suggest a quick vegetarian dinner.", "What does a thermostat do?",
    "Close the blinds in the kitchen.", "Start the vacuum cleaner.", "Remind me to call mom at 6 pm.",
    "What's the weather like tomorrow?", "Set the heating to 21 degrees.", "Tell me a fun fact about octopuses.",
    "Why is the sky blue?", "List two primary colors.", "Turn the fan on in the bedroom.", "What time is sunset?",
    "Write one sentence about the sea.", "Which is larger, a mouse or an elephant?", "How do I boil an egg?",
    "Spell the word 'house'.", "What is the opposite of cold?", "Turn on the porch light at 8 pm.",
    "Mute the TV.", "What is the boiling point of water?", "Recommend a short book.", "Say hello in French.",
)
