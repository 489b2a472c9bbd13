//! Built-in name lists for the fake PII of the demo database (see `seed.rs`).
//!
//! The names are common given names and surnames from several regions; a few contain
//! apostrophes and hyphens on purpose, so that quoting is exercised by demo queries.

/// Given names.
#[rustfmt::skip]
pub(super) const FIRST_NAMES: &[&str] = &[
    "Aaliyah", "Aarav", "Abigail", "Adam", "Adriana", "Ahmed", "Aiko", "Alejandro", "Alice",
    "Amara", "Amelia", "Ana", "Andrei", "Anna", "Arjun", "Astrid", "Ava", "Beatriz", "Benjamin",
    "Bruno", "Camila", "Carlos", "Charlotte", "Chen", "Chloe", "Daniel", "David", "Diego",
    "Dmitri", "Elena", "Elif", "Emily", "Emma", "Ethan", "Fatima", "Felix", "Fernanda",
    "Freya", "Gabriel", "Grace", "Hana", "Hannah", "Hiroshi", "Ibrahim", "Ingrid", "Isabella",
    "Ivan", "Jack", "James", "Javier", "Jin", "Jonas", "Jose", "Julia", "Kai", "Kenji",
    "Khalid", "Laila", "Lars", "Laura", "Leila", "Leon", "Liam", "Lucas", "Lucia", "Luis",
    "Maria", "Mateo", "Mei", "Mia", "Michael", "Mohammed", "Nadia", "Naomi", "Nia", "Noah",
    "Nora", "Olivia", "Omar", "Oscar", "Pablo", "Priya", "Rafael", "Ravi", "Rosa", "Ryan",
    "Sakura", "Samuel", "Sara", "Sebastian", "Sofia", "Sophie", "Tariq", "Thomas", "Valentina",
    "Victor", "Wei", "William", "Yara", "Yuki", "Zara", "Zoe",
];

/// Surnames.
#[rustfmt::skip]
pub(super) const LAST_NAMES: &[&str] = &[
    "Abe", "Adeyemi", "Ahmed", "Alvarez", "Andersen", "Bauer", "Becker", "Bianchi", "Brown",
    "Campbell", "Castillo", "Chen", "Costa", "Cruz", "Da Silva", "Davies", "Dubois", "Eriksson",
    "Evans", "Fernandez", "Fischer", "Garcia", "Gomez", "Gonzalez", "Gupta", "Hansen", "Hernandez",
    "Hoffmann", "Horvath", "Hughes", "Ivanova", "Jackson", "Jensen", "Johansson", "Johnson",
    "Kim", "Kowalski", "Kumar", "Larsen", "Laurent", "Lee", "Lopez", "Martin", "Martinez",
    "Meyer", "Miller", "Moreau", "Muller", "Murphy", "Nakamura", "Nguyen", "Nielsen", "Novak",
    "O'Brien", "O'Connor", "Okafor", "Oliveira", "Park", "Patel", "Perez", "Petrov", "Ramirez",
    "Ribeiro", "Richter", "Rodriguez", "Romano", "Rossi", "Sanchez", "Santos", "Sato", "Schmidt",
    "Schneider", "Sharma", "Silva", "Singh", "Smith", "Suzuki", "Takahashi", "Tanaka", "Taylor",
    "Thompson", "Torres", "Tran", "Van der Berg", "Vargas", "Wagner", "Walker", "Wang", "Weber",
    "Williams", "Wilson", "Wong", "Wright", "Yamamoto", "Yilmaz", "Zhang", "Zhao", "Smith-Jones",
];
