"""Names that fill Home Assistant's {name}, {area}, {floor} and free-text slots.

Home Assistant fills these lists from the user's own entities at run time, so the templates
do not ship them. Each list is split by a fixed seed into disjoint train, dev and test parts:
the test split only sees names the model never saw in training.
"""

from __future__ import annotations

_BASE_AREAS = [
    "kitchen", "living room", "bedroom", "master bedroom", "guest room", "bathroom", "office",
    "garage", "hallway", "dining room", "basement", "attic", "laundry room", "nursery", "study",
    "den", "porch", "patio", "garden", "backyard", "front yard", "playroom", "library", "pantry",
    "kids room", "family room", "sunroom", "mudroom", "workshop", "gym", "utility room", "loft",
    "entryway", "foyer", "balcony", "cellar", "closet", "media room", "craft room", "wine cellar",
    "spare room", "game room", "lounge", "deck", "shed", "greenhouse", "guest bathroom", "powder room",
    "home office", "music room", "boot room", "en suite", "walk in closet", "reading nook", "terrace",
    "conservatory", "carport", "driveway", "pool house", "boiler room", "server room", "studio",
]
# Homes name rooms by position, by owner and by use; composing them gives the model hundreds of
# area names, so that it learns where an area goes in a sentence rather than a short list of words.
_AREA_MODIFIERS = ["east", "west", "north", "south", "guest", "kids", "small", "big", "back", "front",
                   "second", "old", "new", "sunny", "quiet", "corner"]
_AREA_ROOMS = ["bedroom", "bathroom", "hallway", "office", "living room", "kitchen", "porch", "patio",
               "garden", "study", "closet", "balcony", "lounge", "attic", "garage", "nursery"]
_OWNERS = ["emma", "noah", "olivia", "liam", "mia", "lucas", "sophie", "jack", "ava", "leo", "grace",
           "max", "lily", "sam", "zoe", "ben", "nora", "oscar", "ruby", "theo"]
AREAS = sorted(set(_BASE_AREAS) | {f"{m} {r}" for m in _AREA_MODIFIERS for r in _AREA_ROOMS if m != r}
               | {f"{o}'s {r}" for o in _OWNERS for r in ("room", "bedroom", "office", "study", "bathroom")})

_ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"]
_NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
FLOORS = sorted({f"{o} floor" for o in _ORDINALS} | {f"floor {n}" for n in _NUMBERS}
                | {f"level {n}" for n in _NUMBERS}
                | {f"{w} level" for w in ("ground", "main", "lower", "upper", "garden", "street", "roof",
                                          "basement", "pool", "entry")}
                | {"ground floor", "upstairs", "downstairs", "main floor", "top floor", "mezzanine",
                   "rooftop", "penthouse", "lower ground", "attic floor", "bottom floor", "upper floor"})

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
_PLACES = ["front", "back", "side", "big", "little", "old", "new", "main", "second", "east", "west", "north",
           "south"]
# Domain-specific names keep the device's noun ("back mower", "robot vacuum"): with a bare brand
# ("sileno") nothing in the sentence says whether it mows or vacuums, and in Home Assistant that
# comes from the entity's domain, not from words.
DOMAIN_NAMES = {
    "lawn_mower": sorted({f"{p} {n}" for p in _PLACES for n in ("mower", "lawn mower", "robot mower",
                                                                 "mowing robot", "lawnbot", "grass cutter")}
                         | {"lawn mower", "mower", "robot mower", "automower", "lawnbot", "grass cutter",
                            "mowing robot", "landroid mower", "lawn robot", "garden mower", "husqvarna mower",
                            "gardena mower", "bosch mower", "robomow", "mow bot", "yard mower"}),
    "vacuum": sorted({f"{p} {n}" for p in _PLACES for n in ("vacuum", "robot vacuum", "vacuum robot",
                                                             "mop robot", "cleaning robot", "robovac")}
                     | {"roomba vacuum", "vacuum", "robot vacuum", "roborock vacuum", "dreame vacuum", "deebot vacuum",
                        "eufy vacuum", "hoover", "vacuum robot", "neato vacuum", "robovac", "dust buster",
                        "cleaning robot", "shark vacuum", "dyson vacuum", "mop robot", "floor cleaner"}),
    "media_player": ["tv", "television", "speaker", "sonos", "apple tv", "chromecast", "soundbar", "stereo",
                     "radio", "home pod", "shield", "projector", "record player", "roku", "fire tv",
                     "smart display", "echo dot", "nest hub", "sonos one", "sonos arc", "big screen",
                     "the telly", "boombox", "hifi", "amplifier", "jukebox", "media center", "plex",
                     "kodi", "spotify connect"],
    "weather": ["home", "forecast", "weather station", "outside", "the city", "met office", "open weather",
                "local weather", "accuweather", "dark sky", "weather", "netatmo", "ambient station",
                "pirate weather", "weather underground", "rooftop sensor", "garden station", "airport"],
    # No name ends in "list": the templates add "[list]" themselves, and "my chores list" must tag
    # "chores" whether or not a name happens to contain the word.
    # Nor "shopping": "my shopping list" is the HassShoppingList intents' own phrase.
    "todo": ["todo", "groceries", "chores", "work tasks", "packing", "hardware store",
             "pharmacy", "gift ideas", "weekend tasks", "garden jobs", "errands", "costco", "to buy",
             "home projects", "school stuff", "bucket", "reading", "movies to watch", "party planning",
             "christmas", "wish"],
    "climate": ["thermostat", "heat pump", "air conditioner", "ac", "radiator", "boiler", "heater",
                "floor heating", "mini split", "climate", "hvac", "heat", "ecobee", "nest thermostat",
                "tado", "daikin", "furnace", "wall unit", "cooling", "split unit", "heating"],
    "cover": ["blinds", "shades", "curtains", "garage door", "gate", "awning", "shutters", "skylight",
              "roller blind", "drapes", "pergola", "canopy", "roman blinds", "velux", "sun screen",
              "driveway gate", "roller shutter", "louvres", "side gate", "sliding door"],
}
_PRODUCE = ["apples", "bananas", "tomatoes", "onions", "garlic", "strawberries", "spinach", "carrots",
            "potatoes", "lemons", "limes", "avocados", "grapes", "blueberries", "cucumbers", "peppers",
            "broccoli", "mushrooms", "lettuce", "celery", "pears", "oranges", "ginger", "zucchini", "kale"]
_PANTRY = ["milk", "eggs", "bread", "butter", "cheese", "coffee", "tea", "rice", "pasta", "chicken", "salmon",
           "yogurt", "cereal", "flour", "sugar", "olive oil", "honey", "peanut butter", "orange juice",
           "ice cream", "oat milk", "almond milk", "tortillas", "bagels", "granola", "oatmeal", "jam",
           "ketchup", "mustard", "mayonnaise", "soy sauce", "vinegar", "salt", "black pepper", "baking soda",
           "chocolate", "crackers", "chips", "popcorn", "sparkling water", "beer", "wine", "tofu",
           "ground beef", "bacon", "sausages", "shrimp", "tuna", "beans", "lentils", "chickpeas",
           "coconut milk", "cream cheese", "sour cream", "parmesan", "mozzarella", "hummus", "salsa"]
_HOUSEHOLD = ["paper towels", "toilet paper", "dish soap", "batteries", "light bulbs", "dog food",
              "cat litter", "shampoo", "toothpaste", "sponges", "trash bags", "laundry detergent",
              "aluminum foil", "cling film", "napkins", "tissues", "hand soap", "deodorant", "razors",
              "cotton swabs", "sunscreen", "bin liners", "dishwasher tablets", "fabric softener",
              "bleach", "candles", "matches", "plasters", "vitamins", "cat food", "bird seed"]
SHOPPING_ITEMS = sorted(set(_PRODUCE + _PANTRY + _HOUSEHOLD) | {f"organic {p}" for p in _PRODUCE[:12]}
                        | {f"frozen {p}" for p in ("peas", "pizza", "berries", "fries", "spinach", "corn")})
_CHORES = [("call", ["mom", "dad", "the plumber", "the bank", "grandma", "the dentist", "the landlord"]),
           ("pay", ["the rent", "the electric bill", "the water bill", "the phone bill", "the credit card"]),
           ("clean", ["the gutters", "the oven", "the windows", "the garage", "the fridge", "the grill"]),
           ("fix", ["the fence", "the leaky tap", "the squeaky door", "the bike", "the shelf"]),
           ("buy", ["a birthday present", "new shoes", "a plane ticket", "stamps", "a new kettle"]),
           ("book", ["a dentist appointment", "a haircut", "the car service", "a table for friday"]),
           ("return", ["the library books", "the parcel", "the rental car", "the ladder"]),
           ("order", ["new glasses", "printer ink", "a new filter", "flowers for mom"]),
           ("water", ["the plants", "the lawn", "the tomatoes"]),
           ("walk", ["the dog"]), ("mow", ["the lawn"]), ("take out", ["the trash", "the recycling"]),
           ("renew", ["the passport", "the car insurance", "the subscription"]),
           ("send", ["the invoice", "the tax forms", "a thank you card"]),
           ("change", ["the air filter", "the smoke alarm battery", "the bed sheets"]),
           ("cancel", ["the gym membership", "the newspaper", "the old phone plan"]),
           ("pick up", ["the dry cleaning", "the kids", "the prescription"]),
           ("reply to", ["the email", "the school", "aunt mary"]),
           ("back up", ["the laptop", "the photos"]), ("schedule", ["the car service", "a vet visit"])]
TODO_ITEMS = sorted({f"{verb} {thing}" for verb, things in _CHORES for thing in things})
_EVENTS = ["dinner", "lunch", "breakfast", "bedtime", "the movie", "the meeting", "school", "the bus",
           "the show", "bath time", "homework time", "the game"]
MESSAGES = sorted({f"{e} is ready" for e in _EVENTS[:3]} | {f"{e} starts in five minutes" for e in _EVENTS[3:]}
                  | {"time to wake up", "please come downstairs", "we are leaving soon", "someone is at the door",
                     "the laundry is done", "do not forget your keys", "the guests have arrived",
                     "turn off your games", "the package has arrived", "grandma is on the phone",
                     "it is raining outside", "please feed the cat", "the dishwasher is done",
                     "pizza is here", "everyone to the car", "quiet time please", "happy birthday",
                     "the front door is open", "time for your medicine", "the oven is preheated"})
_ARTISTS = ["the beatles", "taylor swift", "miles davis", "queen", "adele", "coldplay", "beyonce",
            "nina simone", "daft punk", "radiohead", "ed sheeran", "fleetwood mac", "bob marley",
            "david bowie", "billie eilish", "the rolling stones", "norah jones", "kendrick lamar",
            "abba", "pink floyd", "dolly parton", "bach", "mozart", "chopin", "john coltrane"]
_GENRES = ["jazz", "classical music", "lo-fi beats", "rock", "blues", "reggae", "hip hop", "country",
           "ambient music", "piano music", "folk", "soul", "disco", "techno", "bossa nova"]
SEARCH_QUERIES = sorted(set(_ARTISTS) | set(_GENRES) | {f"{m} {g}" for m in ("relaxing", "upbeat", "chill",
                                                                               "morning", "sleepy")
                                                         for g in _GENRES[:8]}
                        | {"jazz for dinner", "morning news", "the latest podcast episode", "bohemian rhapsody",
                           "star wars soundtrack", "ocean sounds", "eighties hits", "daily news briefing",
                           "rain sounds", "white noise", "the news", "top forty", "nineties pop",
                           "christmas songs", "kids songs", "workout mix", "focus playlist"})
TIMER_NAMES = sorted({"pizza", "pasta", "laundry", "eggs", "tea", "oven", "bread", "nap", "homework",
                      "cookies", "rice", "workout", "meditation", "parking", "roast", "popcorn", "pancakes",
                      "potatoes", "steak", "cake", "muffins", "soup", "chicken", "dough", "sauna", "bath",
                      "plank", "study", "reading", "screen time", "piano practice", "dryer", "dishwasher",
                      "coffee", "noodles", "broccoli", "brownies", "fish", "turkey", "stretching",
                      "lasagna", "quiche", "stew", "risotto", "tacos", "bagels", "yoga", "naptime"})
_COMMAND_VERBS = ["turn off", "turn on", "switch off", "start", "stop", "open", "close", "lock", "unlock"]
_COMMAND_THINGS = ["the lights", "the vacuum", "the fan", "the blinds", "the front door", "the tv",
                   "the garage door", "the music", "the heater", "the sprinklers", "the coffee maker",
                   "the porch light", "the oven", "the dishwasher", "the gate"]
TIMER_COMMANDS = sorted({f"{v} {t}" for v in _COMMAND_VERBS for t in _COMMAND_THINGS})
ZONES = ["home", "work", "school", "the gym", "the office", "grandma's house", "the park", "the airport",
         "the station", "the supermarket", "the hospital", "the library", "the beach", "the lake house",
         "the cabin", "church", "the mall", "the pool", "university", "the daycare", "the club",
         "mom's place", "the stadium", "downtown", "the farm", "the studio"]

WILDCARDS = {
    "shopping_list_item": SHOPPING_ITEMS, "todo_list_item": TODO_ITEMS, "message": MESSAGES,
    "search_query": SEARCH_QUERIES, "timer_name": TIMER_NAMES, "timer_command": TIMER_COMMANDS,
    "zone": ZONES,
}
# Lists whose values are the user's own words: split so that test names are never trained on.
SPLIT_LISTS = {"name": NAMES, "area": AREAS, "floor": FLOORS, **WILDCARDS,
               **{f"name@{domain}": names for domain, names in DOMAIN_NAMES.items()}}
