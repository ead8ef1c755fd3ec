"""Names that fill Home Assistant's {name}, {area}, {floor} and free-text slots.

Home Assistant fills these lists from the user's own entities at run time, so the templates
do not ship them. Each list is split by a fixed seed into disjoint train, dev and test parts:
the test split only sees names the model never saw in training.
"""

from __future__ import annotations

AREAS = [
    "kitchen", "living room", "bedroom", "master bedroom", "guest room", "bathroom", "office",
    "garage", "hallway", "dining room", "basement", "attic", "laundry room", "nursery", "study",
    "den", "porch", "patio", "garden", "backyard", "front yard", "playroom", "library", "pantry",
    "kids room", "family room", "sunroom", "mudroom", "workshop", "gym", "utility room", "loft",
    "entryway", "foyer", "balcony", "cellar", "closet", "media room", "craft room", "wine cellar",
    "spare room", "game room", "lounge", "deck", "shed", "greenhouse", "guest bathroom", "powder room",
]

FLOORS = [
    "first floor", "second floor", "third floor", "ground floor", "upstairs", "downstairs",
    "main floor", "top floor", "lower level", "upper level", "level one", "level two",
    "level three", "mezzanine", "floor one", "floor two",
]

# Entity names as people write them: a descriptor and a device noun. Descriptors avoid area and
# floor words, so a name never teaches that "nursery" is part of a device's name.
_DESCRIPTORS = ["desk", "bedside", "ceiling", "reading", "stair", "corner", "cabinet", "island", "mirror",
                "accent", "wall", "string", "night", "pendant", "track", "vanity", "floor", "table",
                "window", "door", "big", "small", "left", "right", "main", "color", "smart", "old", "new"]
_DEVICES = ["light", "lamp", "lights", "spotlight", "fan", "heater", "switch", "plug", "outlet",
            "strip", "chandelier", "sconce", "humidifier", "purifier", "kettle", "thermostat",
            "blinds", "shade", "curtain", "door", "window", "gate", "valve"]
NAMES = sorted({f"{d} {n}" for d in _DESCRIPTORS for n in _DEVICES if d != n}) + [
    "echo", "hue go", "nest", "coffee maker", "dishwasher", "washing machine", "dryer", "fridge", "oven",
    "front door lock", "back door lock", "christmas tree", "fish tank", "aquarium pump", "dehumidifier",
]

# Intents that act on one kind of device (`requires_context: domain`) take names of that kind,
# as a real home would have them: "start the mower" and "start the vacuum" differ by the name.
DOMAIN_NAMES = {
    "lawn_mower": ["lawn mower", "mower", "robot mower", "automower", "husqvarna", "lawnbot", "grass cutter",
                   "front lawn mower", "back lawn mower", "mowing robot", "gardena", "worx landroid",
                   "yard mower", "lawn robot", "mammotion", "garden mower"],
    "vacuum": ["roomba", "vacuum", "robot vacuum", "roborock", "dreame", "deebot", "eufy", "hoover",
               "upstairs vacuum", "downstairs vacuum", "vacuum robot", "neato", "robovac", "dust buster",
               "cleaning robot", "shark"],
    "media_player": ["tv", "television", "speaker", "sonos", "apple tv", "chromecast", "soundbar", "stereo",
                     "radio", "kitchen speaker", "bedroom tv", "home pod", "shield", "projector", "record player",
                     "roku", "fire tv", "smart display"],
    "weather": ["home", "forecast", "weather station", "outside", "the city", "met office", "backyard station",
                "open weather", "local weather", "accuweather", "dark sky", "weather"],
    "todo": ["shopping list", "todo list", "groceries", "chores", "work tasks", "packing list",
             "hardware store list", "pharmacy list", "gift ideas", "weekend tasks", "garden jobs", "errands"],
    "climate": ["thermostat", "heat pump", "air conditioner", "ac", "radiator", "boiler", "heater",
                "floor heating", "mini split", "climate", "hvac", "heat"],
    "cover": ["blinds", "shades", "curtains", "garage door", "gate", "awning", "shutters", "skylight",
              "roller blind", "drapes", "pergola", "canopy"],
}
SHOPPING_ITEMS = [
    "milk", "eggs", "bread", "butter", "cheese", "apples", "bananas", "coffee", "tea", "rice",
    "pasta", "tomatoes", "onions", "garlic", "chicken", "salmon", "yogurt", "cereal", "flour",
    "sugar", "olive oil", "paper towels", "toilet paper", "dish soap", "batteries", "light bulbs",
    "orange juice", "peanut butter", "strawberries", "spinach", "carrots", "potatoes", "honey",
    "ice cream", "dog food", "cat litter", "shampoo", "toothpaste", "sponges", "trash bags",
]
TODO_ITEMS = [
    "call mom", "pay the rent", "water the plants", "walk the dog", "book a dentist appointment",
    "renew the passport", "clean the gutters", "return the library books", "fix the fence",
    "send the invoice", "buy a birthday present", "change the air filter", "mow the lawn",
    "take out the trash", "schedule the car service", "reply to the email", "back up the laptop",
    "order new glasses", "pick up the dry cleaning", "cancel the gym membership",
]
MESSAGES = [
    "dinner is ready", "time to wake up", "the movie starts in five minutes", "please come downstairs",
    "we are leaving soon", "someone is at the door", "bedtime in ten minutes", "the laundry is done",
    "lunch is served", "do not forget your keys", "the guests have arrived", "turn off your games",
]
SEARCH_QUERIES = [
    "jazz for dinner", "the beatles", "taylor swift", "relaxing piano", "morning news",
    "classical music", "lo-fi beats", "the latest podcast episode", "bohemian rhapsody",
    "star wars soundtrack", "ocean sounds", "eighties hits", "daily news briefing", "miles davis",
]
TIMER_NAMES = ["pizza", "pasta", "laundry", "eggs", "tea", "oven", "bread", "nap", "homework",
               "cookies", "rice", "workout", "meditation", "parking", "roast", "popcorn"]
TIMER_COMMANDS = ["turn off the lights", "start the vacuum", "turn on the fan", "close the blinds",
                  "lock the front door", "turn off the tv", "open the garage door", "stop the music"]
ZONES = ["home", "work", "school", "the gym", "the office", "grandma's house"]

WILDCARDS = {
    "shopping_list_item": SHOPPING_ITEMS, "todo_list_item": TODO_ITEMS, "message": MESSAGES,
    "search_query": SEARCH_QUERIES, "timer_name": TIMER_NAMES, "timer_command": TIMER_COMMANDS,
    "zone": ZONES,
}
# Lists whose values are the user's own words: split so that test names are never trained on.
SPLIT_LISTS = {"name": NAMES, "area": AREAS, "floor": FLOORS, **WILDCARDS,
               **{f"name@{domain}": names for domain, names in DOMAIN_NAMES.items()}}
