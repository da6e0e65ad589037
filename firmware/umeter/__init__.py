# umeter firmware package
